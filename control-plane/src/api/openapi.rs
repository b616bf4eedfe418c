//! The Resource API's OpenAPI document (PEP-UC-007), generated from the handlers' attributes and
//! the views' types: what it says is what the handlers send.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::handlers;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Policy Enforcement Point Interfaces",
        description = "uma-pep Resource API (pepctl serve). Calls on /resources need Authorization: Bearer <token of the AS>."
    ),
    paths(
        handlers::list,
        handlers::create,
        handlers::show,
        handlers::head,
        handlers::replace,
        handlers::patch,
        handlers::remove,
        handlers::filter_config,
        super::rollout::xds_status,
        handlers::health,
        handlers::ready,
        handlers::openapi,
    ),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
struct ApiDoc;

/// The `bearer` scheme every `/resources` call uses.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document, with this build's version.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}
