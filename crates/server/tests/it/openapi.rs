//! `/api/openapi.json`: an OpenAPI 3 document that names every route the API serves (read
//! from `api/mod.rs`, as the access test reads it), whose references all resolve, and whose
//! schemas come from the API's own types (no credential field among them).

use serde_json::Value;

use crate::access::routes_in_source;
use crate::support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_names_every_route_with_its_schemas() {
    let dir = gantry_test_support::TempDir::new("openapi");
    let server = TestServer::start(&dir.path().join("gantry.db").to_string_lossy()).await;
    let response = server
        .http
        .get(format!("{}/api/openapi.json", server.url))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 200, "open to anyone");
    let document: Value = response.json().await.expect("JSON");
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{}",
        document["openapi"]
    );
    let routes = routes_in_source();
    assert!(routes.len() > 30, "{routes:?}");
    let missing: Vec<String> = routes
        .iter()
        .filter(|(method, path)| document["paths"][path][method.to_lowercase()].is_null())
        .map(|(method, path)| format!("{method} {path}"))
        .collect();
    assert!(missing.is_empty(), "not in the document: {missing:?}");

    // Every reference resolves to a schema of the document.
    let text = document.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().expect("a name");
        assert!(
            document["components"]["schemas"][name].is_object(),
            "`{name}` is referenced but not defined"
        );
    }
    let repo = &document["components"]["schemas"]["Repo"]["properties"];
    assert!(repo["has_ssh_key"].is_object(), "{repo}");
    for credential in ["ssh_key", "github_token", "webhook_secret"] {
        assert!(
            repo[credential].is_null(),
            "the Repo view has no `{credential}`"
        );
    }
    let detail = &document["paths"]["/api/repos/{owner}/{name}/builds/{number}"]["get"];
    assert_eq!(
        detail["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/BuildDetail"
    );
    assert_eq!(
        detail["parameters"].as_array().map(Vec::len),
        Some(3),
        "owner, name and number: {detail}"
    );
    server.stop().await;
}
