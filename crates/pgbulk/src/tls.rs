//! TLS for tokio-postgres over rustls, with libpq's `sslmode` meanings:
//! `require` encrypts without verifying (unless a root certificate exists,
//! then it verifies like `verify-ca`), `verify-ca` checks the chain,
//! `verify-full` the chain and the host name.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use crate::conninfo::{SslMode, TlsFiles, TlsVersion};
use crate::error::{Error, ErrorKind, Result};

/// How much of the server's certificate to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    Nothing,
    Chain,
    ChainAndName,
}

/// Builds the TLS connector for `sslmode` and the certificate settings.
pub(crate) fn connector(sslmode: SslMode, files: &TlsFiles) -> Result<MakeRustls> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let rootcert = files.rootcert.as_deref();
    let root_exists = rootcert.is_some_and(|r| r == "system" || Path::new(r).is_file());
    let verify = match sslmode {
        SslMode::VerifyFull => Verify::ChainAndName,
        SslMode::VerifyCa => Verify::Chain,
        SslMode::Require if root_exists => Verify::Chain,
        _ => Verify::Nothing,
    };
    let verifier: Arc<dyn ServerCertVerifier> = if verify == Verify::Nothing {
        Arc::new(NoVerification(provider.clone()))
    } else {
        let rootcert = rootcert.unwrap_or("~/.postgresql/root.crt");
        if !root_exists {
            return Err(tls_error(format!(
                "root certificate file \"{rootcert}\" does not exist; provide the file, use the system's trusted roots with sslrootcert=system, or change sslmode to disable server certificate verification"
            )));
        }
        let roots = Arc::new(root_store(rootcert)?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| tls_error(format!("invalid root certificates in \"{rootcert}\": {e}")))?;
        if verify == Verify::Chain {
            Arc::new(ChainOnly(webpki))
        } else {
            webpki
        }
    };
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    let allowed = |v: TlsVersion| {
        files.min_version.is_none_or(|min| v >= min) && files.max_version.is_none_or(|max| v <= max)
    };
    if allowed(TlsVersion::Tls12) {
        versions.push(&rustls::version::TLS12);
    }
    if allowed(TlsVersion::Tls13) {
        versions.push(&rustls::version::TLS13);
    }
    if versions.is_empty() {
        return Err(Error::config(
            "ssl_min_protocol_version is above ssl_max_protocol_version",
        ));
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| tls_error(format!("TLS set-up failed: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client_cert(files)? {
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| tls_error(format!("invalid client certificate or key: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    config.enable_sni = files.sni;
    Ok(MakeRustls(Arc::new(config)))
}

fn tls_error(message: String) -> Error {
    Error::new(ErrorKind::Tls, message)
}

fn root_store(rootcert: &str) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    if rootcert == "system" {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            return Err(tls_error(
                "sslrootcert=system: no trusted root certificates found on this system".to_owned(),
            ));
        }
        store.add_parsable_certificates(found.certs);
        return Ok(store);
    }
    let certs = CertificateDer::pem_file_iter(rootcert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            tls_error(format!(
                "could not read root certificate file \"{rootcert}\": {e}"
            ))
        })?;
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(tls_error(format!(
            "root certificate file \"{rootcert}\" holds no usable certificate"
        )));
    }
    Ok(store)
}

type ClientCert = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The client certificate and key, when both files exist.
fn client_cert(files: &TlsFiles) -> Result<Option<ClientCert>> {
    let (Some(cert), Some(key)) = (&files.cert, &files.key) else {
        return Ok(None);
    };
    if !cert.is_file() {
        return Ok(None);
    }
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            tls_error(format!(
                "could not read certificate file \"{}\": {e}",
                cert.display()
            ))
        })?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        tls_error(format!(
            "certificate present, but could not read private key file \"{}\": {e}",
            key.display()
        ))
    })?;
    Ok(Some((certs, key)))
}

/// Accepts any certificate but still checks the handshake signatures, so the
/// channel is encrypted to whoever holds the key (libpq's `require`).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Verifies the chain to a trusted root but not the host name (`verify-ca`).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain before the name, so a name error means the
        // chain is good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// tokio-postgres' TLS hook, backed by a rustls client configuration.
#[derive(Clone)]
pub(crate) struct MakeRustls(Arc<ClientConfig>);

impl std::fmt::Debug for MakeRustls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MakeRustls")
    }
}

impl MakeRustls {
    /// The rustls configuration (for a TLS stream set up by hand).
    pub(crate) fn config(&self) -> Arc<ClientConfig> {
        self.0.clone()
    }
}

impl MakeTlsConnect<tokio_postgres::Socket> for MakeRustls {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        let name = ServerName::try_from(domain.trim_matches(['[', ']']).to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(RustlsConnect {
            config: self.0.clone(),
            name,
        })
    }
}

/// One pending TLS handshake.
pub(crate) struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsConnect<tokio_postgres::Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: tokio_postgres::Socket) -> Self::Future {
        Box::pin(async move {
            let connector = tokio_rustls::TlsConnector::from(self.config);
            let tls = connector.connect(self.name, stream).await?;
            Ok(RustlsStream(Box::new(tls)))
        })
    }
}

/// An established TLS stream.
pub(crate) struct RustlsStream(Box<tokio_rustls::client::TlsStream<tokio_postgres::Socket>>);

impl tokio_postgres::tls::TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}
