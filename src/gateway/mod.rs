//! The MCP gateway: the data path in front of every MCPServer and MCPServerGroup.

pub mod auth;
