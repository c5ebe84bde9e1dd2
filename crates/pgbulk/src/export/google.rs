//! Google credentials as Google's client libraries find them, and the
//! HTTP agent the BigQuery client speaks through (ureq on rustls with
//! `ring`, the system's root certificates).
//!
//! In order: `GOOGLE_APPLICATION_CREDENTIALS` (a service-account key file:
//! a JWT signed with its RSA key (RS256), exchanged at its `token_uri`; or
//! an `authorized_user` file: its refresh token exchanged), then the
//! application-default credentials `gcloud auth application-default login`
//! writes (`~/.config/gcloud/application_default_credentials.json`, or
//! under `CLOUDSDK_CONFIG`), then the metadata server of a GCP machine
//! (`GCE_METADATA_HOST` names another). Tokens are kept until five minutes
//! before they expire. A key file's private key is never logged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};

/// The OAuth scope of BigQuery.
const SCOPE: &str = "https://www.googleapis.com/auth/bigquery";
/// Where user (refresh-token) credentials are exchanged.
const USER_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// An HTTP agent: rustls with `ring` and the system's roots; HTTP error
/// statuses are answers (read by the caller), not errors.
pub fn agent() -> Result<ureq::Agent> {
    let roots = rustls_native_certs::load_native_certs();
    let certs: Vec<ureq::tls::Certificate<'static>> = roots
        .certs
        .iter()
        .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    Ok(ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        // A resumable upload's 308 is an answer, not a redirect.
        .max_redirects(0)
        // No limit on a whole call (an upload takes as long as the file
        // needs); a stalled connection is noticed.
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(600)))
        .timeout_per_write(Some(Duration::from_secs(600)))
        .user_agent(format!("pgbulk/{}", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent())
}

/// Where tokens come from.
#[derive(Debug)]
pub enum Credentials {
    /// None (an emulator).
    Anonymous,
    /// A service account's key.
    ServiceAccount(ServiceAccount),
    /// A user's refresh token (application-default credentials).
    User {
        /// The OAuth client's id.
        client_id: String,
        /// The OAuth client's secret.
        client_secret: String,
        /// The user's refresh token.
        refresh_token: String,
    },
    /// The metadata server at this host.
    Metadata(String),
}

/// The fields of a service-account key file pgbulk uses.
#[derive(Deserialize)]
pub struct ServiceAccount {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default = "default_token_uri")]
    token_uri: String,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

fn default_token_uri() -> String {
    USER_TOKEN_URI.to_owned()
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
}

impl Credentials {
    /// Finds credentials as Google's clients do (see the module
    /// documentation).
    pub fn find() -> Result<Self> {
        if let Some(path) =
            std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").filter(|p| !p.is_empty())
        {
            return Self::from_file(&PathBuf::from(path));
        }
        let config = std::env::var_os("CLOUDSDK_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/gcloud")));
        if let Some(adc) = config.map(|c| c.join("application_default_credentials.json")) {
            if adc.is_file() {
                return Self::from_file(&adc);
            }
        }
        let host = std::env::var("GCE_METADATA_HOST")
            .unwrap_or_else(|_| "metadata.google.internal".to_owned());
        Ok(Self::Metadata(host))
    }

    /// Reads a key file (`service_account` or `authorized_user`).
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let bad = |why: String| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "the Google credentials in {} cannot be used: {why}",
                    path.display()
                ),
            )
        };
        let text = std::fs::read(path)
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        let kind: KeyFile = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        match kind.kind.as_str() {
            "service_account" => {
                let key: ServiceAccount =
                    serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
                // The key is checked now: a bad one fails before any row is read.
                rsa_key(&key.private_key).map_err(bad)?;
                Ok(Self::ServiceAccount(key))
            }
            "authorized_user" => match (kind.client_id, kind.client_secret, kind.refresh_token) {
                (Some(client_id), Some(client_secret), Some(refresh_token)) => Ok(Self::User {
                    client_id,
                    client_secret,
                    refresh_token,
                }),
                _ => Err(bad(
                    "an authorized_user file needs client_id, client_secret and refresh_token"
                        .to_owned(),
                )),
            },
            other => Err(bad(format!(
                "type \"{other}\" is not supported (service_account or authorized_user)"
            ))),
        }
    }
}

/// Hands out access tokens, fetching a new one when the last is about to
/// expire.
#[derive(Debug)]
pub struct Tokens {
    credentials: Credentials,
    current: Option<(String, Instant)>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Tokens {
    /// Tokens from `credentials`.
    pub fn new(credentials: Credentials) -> Self {
        Self {
            credentials,
            current: None,
        }
    }

    /// The `Authorization` header's value, or `None` (anonymous).
    pub fn header(&mut self, agent: &ureq::Agent) -> Result<Option<String>> {
        if matches!(self.credentials, Credentials::Anonymous) {
            return Ok(None);
        }
        if let Some((token, until)) = &self.current {
            if Instant::now() + Duration::from_secs(300) < *until {
                return Ok(Some(format!("Bearer {token}")));
            }
        }
        let answer = self.fetch(agent)?;
        let until = Instant::now() + Duration::from_secs(answer.expires_in.unwrap_or(3600));
        let header = format!("Bearer {}", answer.access_token);
        self.current = Some((answer.access_token, until));
        Ok(Some(header))
    }

    fn fetch(&self, agent: &ureq::Agent) -> Result<TokenAnswer> {
        let (url, response) = match &self.credentials {
            Credentials::Anonymous => unreachable!("anonymous credentials fetch no token"),
            Credentials::ServiceAccount(key) => {
                let assertion = jwt(key, now()?)?;
                let body = form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", &assertion),
                ]);
                (
                    key.token_uri.clone(),
                    agent
                        .post(&key.token_uri)
                        .content_type("application/x-www-form-urlencoded")
                        .send(body),
                )
            }
            Credentials::User {
                client_id,
                client_secret,
                refresh_token,
            } => {
                let body = form(&[
                    ("grant_type", "refresh_token"),
                    ("client_id", client_id),
                    ("client_secret", client_secret),
                    ("refresh_token", refresh_token),
                ]);
                (
                    USER_TOKEN_URI.to_owned(),
                    agent
                        .post(USER_TOKEN_URI)
                        .content_type("application/x-www-form-urlencoded")
                        .send(body),
                )
            }
            Credentials::Metadata(host) => {
                let url = format!(
                    "http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
                );
                let response = agent.get(&url).header("Metadata-Flavor", "Google").call();
                (url, response)
            }
        };
        let failed = |why: String| {
            Error::new(
                ErrorKind::Auth,
                format!(
                    "no Google access token from {url}: {why} (set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, run `gcloud auth application-default login`, or run on GCP)"
                ),
            )
        };
        let mut response = response.map_err(|e| failed(e.to_string()))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| failed(e.to_string()))?;
        if status != 200 {
            return Err(failed(format!("HTTP {status}: {}", text.trim())));
        }
        serde_json::from_str(&text).map_err(|e| failed(e.to_string()))
    }
}

fn now() -> Result<u64> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| Error::new(ErrorKind::Io, "the clock is before 1970"))
}

/// `application/x-www-form-urlencoded` of `pairs`.
fn form(pairs: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        let mut out = String::new();
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The RSA key of a PEM `PRIVATE KEY` (PKCS#8).
fn rsa_key(pem: &str) -> std::result::Result<ring::rsa::KeyPair, String> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = STANDARD
        .decode(body.as_bytes())
        .map_err(|_| "its private_key is not PEM".to_owned())?;
    ring::rsa::KeyPair::from_pkcs8(&der)
        .map_err(|e| format!("its private_key is not a PKCS#8 RSA key ({e})"))
}

/// The signed JWT a service account exchanges for a token, issued at `iat`
/// (seconds since 1970) for an hour.
fn jwt(key: &ServiceAccount, iat: u64) -> Result<String> {
    let pair = rsa_key(&key.private_key)
        .map_err(|why| Error::new(ErrorKind::Config, format!("the service-account key: {why}")))?;
    let mut header = serde_json::json!({ "alg": "RS256", "typ": "JWT" });
    if let Some(kid) = &key.private_key_id {
        header["kid"] = serde_json::Value::String(kid.clone());
    }
    let claims = serde_json::json!({
        "iss": key.client_email,
        "scope": SCOPE,
        "aud": key.token_uri,
        "iat": iat,
        "exp": iat + 3600,
    });
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signed.as_bytes(),
        &mut signature,
    )
    .map_err(|_| {
        Error::new(
            ErrorKind::Config,
            "signing with the service-account key failed",
        )
    })?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service-account key file made by `openssl` (a real RSA key).
    fn key_file() -> Option<(ServiceAccount, std::path::PathBuf)> {
        let dir = std::env::temp_dir().join(format!("pgbulk-google-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let pem = dir.join("key.pem");
        let made = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&pem)
            .output()
            .ok()?;
        assert!(made.status.success(), "openssl genpkey");
        let private_key = std::fs::read_to_string(&pem).ok()?;
        let json = serde_json::json!({
            "type": "service_account",
            "client_email": "loader@project.iam.gserviceaccount.com",
            "private_key_id": "k1",
            "private_key": private_key,
            "token_uri": "https://oauth2.googleapis.com/token",
        });
        let path = dir.join("key.json");
        std::fs::write(&path, json.to_string()).ok()?;
        let key: ServiceAccount = serde_json::from_value(json).ok()?;
        Some((key, path))
    }

    #[test]
    fn a_service_accounts_jwt_is_signed_with_its_key() {
        let (key, path) = key_file().expect("openssl makes a key");
        assert!(matches!(
            Credentials::from_file(&path),
            Ok(Credentials::ServiceAccount(_))
        ));
        let token = jwt(&key, 1_700_000_000).expect("jwt");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], "k1");
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
        assert_eq!(claims["iss"], "loader@project.iam.gserviceaccount.com");
        assert_eq!(claims["scope"], SCOPE);
        assert_eq!(claims["exp"], 1_700_003_600);
        // The signature verifies with the key's public half.
        let pair = rsa_key(&key.private_key).expect("key");
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            pair.public().as_ref(),
        );
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
        public
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("the signature verifies");
        // A key file with a broken key is refused when read.
        let broken = path.with_file_name("broken.json");
        std::fs::write(
            &broken,
            r#"{"type": "service_account", "client_email": "x", "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"}"#,
        )
        .expect("write");
        let refused = Credentials::from_file(&broken).expect_err("refused");
        assert!(
            refused.to_string().contains("not a PKCS#8 RSA key"),
            "{refused}"
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
    }

    #[test]
    fn forms_are_encoded() {
        assert_eq!(form(&[("a b", "x&y=z/é")]), "a%20b=x%26y%3Dz%2F%C3%A9");
    }
}
