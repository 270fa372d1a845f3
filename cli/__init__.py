"""`gateway`: the command line for batch scripts and operators (talks to the REST API)."""
