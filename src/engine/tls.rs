//! TLS for wss:// with rustls (ring provider): the system's roots by default,
//! tls-package style settings when the script gives `-tls {...}`.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Settings from `-tls {-cafile .. -cadir .. -certfile .. -keyfile .. -servername .. -require ..}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub cafile: Option<PathBuf>,
    pub cadir: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub servername: Option<String>,
    /// Verify the server's certificate and name (default true).
    pub require: Option<bool>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot parse certificates in {}: {e}", path.display()))
}

fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            for cert in found.certs {
                let _ = store.add(cert);
            }
            if store.is_empty() {
                return Err("no trusted root certificates found on this system (set SSL_CERT_FILE, or -tls {-cafile ...})".to_string());
            }
            Ok(Arc::new(store))
        })
        .clone()
}

/// Accepts any certificate: what `-tls {-require 0}` asks for.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
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

/// The client configuration for `settings`; the default one is built once.
pub fn client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>, String> {
    static DEFAULT: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    if *settings == TlsSettings::default() {
        return DEFAULT.get_or_init(|| build(settings)).clone();
    }
    build(settings)
}

fn build(s: &TlsSettings) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if s.require == Some(false) {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
    } else {
        let roots = if s.cafile.is_some() || s.cadir.is_some() {
            let mut store = RootCertStore::empty();
            if let Some(f) = &s.cafile {
                for c in read_certs(f)? {
                    store
                        .add(c)
                        .map_err(|e| format!("bad CA certificate in {}: {e}", f.display()))?;
                }
            }
            if let Some(d) = &s.cadir {
                let entries = std::fs::read_dir(d)
                    .map_err(|e| format!("cannot read {}: {e}", d.display()))?;
                for e in entries.flatten() {
                    if let Ok(certs) = read_certs(&e.path()) {
                        for c in certs {
                            let _ = store.add(c);
                        }
                    }
                }
            }
            if store.is_empty() {
                return Err("no usable CA certificates in -cafile/-cadir".to_string());
            }
            Arc::new(store)
        } else {
            system_roots()?
        };
        builder.with_root_certificates(roots)
    };
    let config = match (&s.certfile, &s.keyfile) {
        (Some(cert), key) => {
            let certs = read_certs(cert)?;
            let key_path = key.as_ref().unwrap_or(cert);
            let data = std::fs::read(key_path)
                .map_err(|e| format!("cannot read {}: {e}", key_path.display()))?;
            let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut data.as_slice())
                .map_err(|e| format!("cannot parse key in {}: {e}", key_path.display()))?
                .ok_or_else(|| format!("no private key in {}", key_path.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("bad client certificate: {e}"))?
        }
        (None, _) => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
