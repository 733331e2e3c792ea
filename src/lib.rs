//! mcp-hangar: a Kubernetes operator for MCP servers, built around a strict admission webhook.

pub mod admission;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod gateway;
pub mod mcp;
pub mod metrics;
pub mod policy;
pub mod readiness;
pub mod serving;
pub mod shutdown;
pub mod tls;
