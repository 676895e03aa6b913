"""browserd client: the wire protocol, Client/AsyncClient and browserctl."""
