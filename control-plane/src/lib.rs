//! pepctl: the control plane of uma-pep. It registers the PEP's client and its resources at
//! the UMA AS, keeps the resource repository with their owners, serves the Resource API and
//! renders the filter's configuration for Envoy and Istio. The binary (`main.rs`) is a thin
//! command line over these modules.

pub mod api;
pub mod apply;
pub mod context;
pub mod discovery;
pub mod docs_page;
pub mod expiry;
pub mod identity;
pub mod jwks;
pub mod pat;
pub mod pdp;
pub mod refusal;
pub mod registration;
pub mod render;
pub mod repository;
pub mod resource_set;
pub mod rules;
pub mod transport;
pub mod xds;
