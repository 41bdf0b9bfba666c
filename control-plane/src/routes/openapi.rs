//! The OpenAPI document, generated from the handlers' annotations and the request and
//! response types, so it cannot drift from the code. `control-plane/openapi.json` is a copy
//! kept for readers; a test fails when it differs from what this generates.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "FlexPhotoDB control plane",
        description = "Image metadata, uploads, processing, search and review. Every route \
            under /v1 needs an API key (`Authorization: Bearer KEY`) except the signed local \
            upload URL. Every failure answers with an error document; every list with \
            `{items, next_cursor}`.",
    ),
    paths(
        super::uploads::create,
        super::uploads::complete,
        super::uploads::local_put,
        super::uploads::s3_webhook,
        super::images::list_images,
        super::images::get_image,
        super::images::patch_image,
        super::images::delete_image,
        super::images::sized_url,
        super::search::search,
        super::search::duplicates_of,
        super::search::list_duplicates,
        super::search::history,
        super::catalog::patch_metadata,
        super::catalog::put_rights,
        super::catalog::post_workflow,
        super::catalog::get_lineage,
        super::catalog::put_lineage,
        super::catalog::restore,
        super::collections::create,
        super::collections::list,
        super::collections::get,
        super::collections::patch,
        super::collections::put_schema,
        super::collections::get_schema,
        super::collections::schema_versions,
        super::collections::put_vocabulary,
        super::review::queue,
        super::review::decisions,
        super::review::metrics,
        super::review::expiring,
        super::keys::create_key,
        super::keys::list_keys,
        super::keys::revoke_key,
        super::admin::job_stats,
        super::jobs::list_jobs,
        super::jobs::retry_job,
        super::owners::list_owners,
        super::admin::cluster,
        super::lifecycle::push_access,
        super::lifecycle::cost_report,
        super::lifecycle::cost_projection,
        super::lifecycle::tiering_plan,
        super::lifecycle::restore_image,
        super::storage_history::storage_history,
        super::admin::healthz,
        super::admin::metrics,
        super::admin::openapi,
    ),
    components(schemas(super::uploads::OneShotCreated)),
    modifiers(&BearerKey),
    tags(
        (name = "uploads", description = "Presigned and one-shot uploads"),
        (name = "images", description = "Reading, listing, editing and deleting images"),
        (name = "search", description = "Text, like-image and query-image search with filters"),
        (name = "review", description = "Near-duplicates, correction history, the review queue and rights ending"),
        (name = "catalog", description = "An image's catalog: descriptive metadata, rights, workflow, lineage, restoring past versions"),
        (name = "collections", description = "Collections, metadata schemas and vocabularies"),
        (name = "keys", description = "API keys"),
        (name = "operations", description = "Health, metrics, queue statistics"),
        (name = "lifecycle", description = "Access statistics, tiering, restores and the cost model"),
    )
)]
pub struct ApiDoc;

/// Declares the bearer API key scheme the routes name.
struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "api_key",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some("An API key: `Authorization: Bearer fpk_…`"))
                        .build(),
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed copy of the document is what the code generates
    /// (regenerate with `FLEXPHOTO_WRITE_OPENAPI=1 cargo test -p flexphoto-control-plane openapi`).
    #[test]
    fn committed_openapi_matches_the_code() {
        let generated = ApiDoc::openapi().to_pretty_json().unwrap() + "\n";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        if std::env::var_os("FLEXPHOTO_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap();
        assert!(
            committed == generated,
            "control-plane/openapi.json is stale; regenerate it with \
             FLEXPHOTO_WRITE_OPENAPI=1 cargo test -p flexphoto-control-plane openapi"
        );
    }
}
