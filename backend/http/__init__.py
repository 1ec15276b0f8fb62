"""The backend's HTTP API: reports and audit for admin users, the wallet for client apps."""
