"""The API-action MCP server: REST operations and use cases as agent-callable tools.

Served by ``bavlio serve`` at ``/mcp`` (Streamable HTTP) and by ``bavlio mcp`` on stdio. Each tool
runs through the same keyed guard, handlers, stores and payment gate as REST (see
:mod:`server.mcp.registry`)."""
