//! uma-pep-core: the pure logic of the UMA 2.0 Policy Enforcement Point.
//!
//! Nothing here performs I/O or knows proxy-wasm: configuration, path normalisation and
//! resource matching, the UMA wire formats of both AS dialects, and the allow/deny decision.
//! The filter (`src/`) turns host events into calls here and the answers into host actions;
//! `pepctl` shares the configuration and resource types.

pub mod access_decision;
pub mod cache;
pub mod challenge;
pub mod config;
pub mod credential;
pub mod crypto;
pub mod decision;
pub mod facts;
pub mod flow;
pub mod forward;
pub mod headers;
pub mod host;
pub mod introspection;
pub mod jwks_keeper;
pub mod jwt_rpt;
pub mod keypath;
pub mod matcher;
pub mod partial;
pub mod path;
pub mod resource;
pub mod resource_lookup;
pub mod resource_table;
pub mod session;
pub mod session_keeper;
pub mod shared_data;
pub mod table_sync;
pub mod uri_pattern;
pub mod wire;
pub mod worker;
