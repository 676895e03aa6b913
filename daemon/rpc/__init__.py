"""The msgpack-RPC API: the socket server and its sessions (server), the method table and
what every handler gets (api), server-pushed event streams (follow) and the methods, one
module per resource (methods/). May import every layer below it."""
