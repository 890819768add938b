//! Credentials for private container registries: which registry an image comes from (with
//! Docker Hub's aliases), and the credentials a Docker `config.json` holds (Drone's
//! `image_pull_secrets`). Pure: the server reads secrets and registry entries into
//! [`RegistryCredential`]s, the runner picks one per image with [`RegistryCredential::for_image`].

use base64::Engine;
use serde::{Deserialize, Serialize};

/// The host Docker Hub's images are known by, whatever alias names it.
pub const DOCKER_HUB: &str = "docker.io";

/// A login for one registry. Its `Debug` shows no password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryCredential {
    /// The registry's host (and port), normalised by [`registry_of_key`].
    pub host: String,
    pub username: String,
    pub password: String,
    /// Where it came from, for messages: "secret `NAME`", "registry entry of acme/app".
    pub source: String,
}

impl std::fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RegistryCredential({} as `{}`, from {})",
            self.host, self.username, self.source
        )
    }
}

impl RegistryCredential {
    /// The credential for `image` among `all`: the first whose host is the image's registry.
    pub fn for_image<'a>(all: &'a [RegistryCredential], image: &str) -> Option<&'a Self> {
        let host = image_registry(image);
        all.iter().find(|c| c.host == host)
    }

    /// `all` as a Docker `config.json` (what a Kubernetes `kubernetes.io/dockerconfigjson`
    /// Secret holds): the first login of each host.
    pub fn docker_config_json(all: &[RegistryCredential]) -> String {
        let mut auths = serde_json::Map::new();
        for credential in all {
            let auth = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", credential.username, credential.password));
            auths
                .entry(credential.host.clone())
                .or_insert_with(|| serde_json::json!({ "auth": auth }));
        }
        serde_json::json!({ "auths": auths }).to_string()
    }
}

/// The registry an image reference pulls from: its first path component when that names a
/// host (has a `.` or a `:`, or is `localhost`), else Docker Hub.
pub fn image_registry(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            registry_of_key(first)
        }
        _ => DOCKER_HUB.to_owned(),
    }
}

/// A registry as a `config.json` key or a user writes it (`https://index.docker.io/v1/`,
/// `registry.example.com:5000`, `HTTP://Registry.Example.com/`), as one host: no scheme, no
/// path, lower case, Docker Hub's aliases as [`DOCKER_HUB`].
pub fn registry_of_key(key: &str) -> String {
    let key = key.trim();
    let without_scheme = key
        .split_once("://")
        .map_or(key, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match without_scheme.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_owned()
        }
        _ => without_scheme,
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The logins of a Docker `config.json` (`{"auths": {HOST: {"auth": base64(user:pass)}}}`, or
/// `username` and `password` fields), also as a Kubernetes secret's `.dockerconfigjson` (the
/// same JSON, or its base64, under that key). `source` names where it came from; errors say
/// what is wrong without showing a value.
pub fn parse_docker_config(text: &str, source: &str) -> Result<Vec<RegistryCredential>, String> {
    let value: serde_json::Value = serde_json::from_str(text.trim()).map_err(|e| {
        format!(
            "{source} is not a Docker config.json ({e}): it must be JSON like {{\"auths\": {{\"HOST\": {{\"auth\": \"BASE64(user:password)\"}}}}}}"
        )
    })?;
    if let Some(inner) = value.get(".dockerconfigjson").and_then(|v| v.as_str()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(inner.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .unwrap_or_else(|| inner.to_owned());
        return parse_docker_config(&decoded, source);
    }
    let config: DockerConfig = serde_json::from_value(value)
        .map_err(|e| format!("{source}: its `auths` cannot be read: {e}"))?;
    if config.auths.is_empty() {
        return Err(format!(
            "{source} holds no registry login: its `auths` is missing or empty"
        ));
    }
    config
        .auths
        .into_iter()
        .map(|(key, entry)| {
            let host = registry_of_key(&key);
            let (username, password) = match (entry.username, entry.password, entry.auth) {
                (Some(username), Some(password), _) => (username, password),
                (_, _, Some(auth)) => base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .and_then(|pair| {
                        pair.split_once(':')
                            .map(|(u, p)| (u.to_owned(), p.to_owned()))
                    })
                    .ok_or_else(|| {
                        format!("{source}: the `auth` of `{key}` is not base64 of `user:password`")
                    })?,
                _ => {
                    return Err(format!(
                        "{source}: `{key}` has neither `auth` nor `username` and `password`"
                    ));
                }
            };
            Ok(RegistryCredential {
                host,
                username,
                password,
                source: source.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn an_image_names_its_registry_or_is_docker_hubs() {
        assert_eq!(image_registry("alpine"), "docker.io");
        assert_eq!(image_registry("alpine:3.20"), "docker.io");
        assert_eq!(image_registry("library/alpine"), "docker.io");
        assert_eq!(image_registry("plugins/slack:1"), "docker.io");
        assert_eq!(image_registry("docker.io/plugins/slack"), "docker.io");
        assert_eq!(
            image_registry("index.docker.io/library/alpine"),
            "docker.io"
        );
        assert_eq!(image_registry("ghcr.io/acme/app:1"), "ghcr.io");
        assert_eq!(
            image_registry("127.0.0.1:5055/gantry/busybox"),
            "127.0.0.1:5055"
        );
        assert_eq!(image_registry("localhost/app"), "localhost");
        assert_eq!(
            image_registry("Registry.Example.com:5000/app@sha256:abc"),
            "registry.example.com:5000"
        );
    }

    #[test]
    fn config_keys_are_hosts() {
        assert_eq!(registry_of_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_of_key("registry-1.docker.io"), "docker.io");
        assert_eq!(
            registry_of_key("HTTP://Registry.Example.com/"),
            "registry.example.com"
        );
        assert_eq!(registry_of_key("127.0.0.1:5055"), "127.0.0.1:5055");
    }

    #[test]
    fn every_form_of_config_json_gives_its_logins() {
        let auth = format!(
            r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{}"}}, "ghcr.io": {{"username": "bot", "password": "p:w"}}}}}}"#,
            b64("octo:hub-pass")
        );
        let logins = parse_docker_config(&auth, "secret `docker`").expect("reads");
        let hub = RegistryCredential::for_image(&logins, "alpine").expect("hub");
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("octo", "hub-pass")
        );
        let ghcr = RegistryCredential::for_image(&logins, "ghcr.io/acme/app").expect("ghcr");
        assert_eq!(
            (ghcr.username.as_str(), ghcr.password.as_str()),
            ("bot", "p:w")
        );
        assert!(RegistryCredential::for_image(&logins, "quay.io/x/y").is_none());

        let written = RegistryCredential::docker_config_json(&[RegistryCredential {
            host: "registry.example.com:5000".into(),
            username: "bot".into(),
            password: "p:ss".into(),
            source: "test".into(),
        }]);
        let read = parse_docker_config(&written, "written").expect("reads what it wrote");
        assert_eq!(
            (
                read[0].host.as_str(),
                read[0].username.as_str(),
                read[0].password.as_str()
            ),
            ("registry.example.com:5000", "bot", "p:ss")
        );
        let kubernetes = format!(r#"{{".dockerconfigjson": "{}"}}"#, b64(&auth));
        assert_eq!(
            parse_docker_config(&kubernetes, "secret `docker`").expect("reads"),
            logins
        );
    }

    #[test]
    fn a_wrong_config_says_what_is_wrong_without_its_values() {
        for (text, says) in [
            ("not json", "is not a Docker config.json"),
            ("{}", "holds no registry login"),
            (
                r#"{"auths": {"ghcr.io": {"auth": "%%%"}}}"#,
                "is not base64 of `user:password`",
            ),
            (
                r#"{"auths": {"ghcr.io": {"username": "u"}}}"#,
                "has neither `auth` nor",
            ),
        ] {
            let error = parse_docker_config(text, "secret `docker`").expect_err(text);
            assert!(error.starts_with("secret `docker`"), "{error}");
            assert!(error.contains(says), "{text}: {error}");
        }
        let logins = parse_docker_config(
            r#"{"auths": {"h": {"username": "u", "password": "hunter2"}}}"#,
            "s",
        )
        .expect("reads");
        assert!(!format!("{logins:?}").contains("hunter2"));
    }
}
