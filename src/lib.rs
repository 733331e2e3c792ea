//! mcp-hangar: a Kubernetes operator for MCP servers, built around a strict admission webhook.

pub mod crd;
pub mod policy;
pub mod tls;
pub mod admission;
pub mod controller;
pub mod metrics;
pub mod cli;
