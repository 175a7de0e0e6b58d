//! TLS for the stand-ins: a CA made per stand-in, the server certificates it issues, and
//! clients that trust that CA and nothing else. A stand-in serves HTTPS under the name a real
//! service has (`*.vault.azure.net`, `127.0.0.1`), and the handler (or an Azure SDK) trusts it
//! only because it is given the CA through `SSL_CERT_FILE`.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority that exists for one stand-in.
pub(crate) struct TestCa(CertifiedIssuer<'static, KeyPair>);

impl TestCa {
    /// A fresh CA whose common name is `name`.
    pub(crate) fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("a key pair generates");
        TestCa(CertifiedIssuer::self_signed(params, key).expect("the CA certificate self-signs"))
    }

    /// The CA's certificate as PEM: what a client is told to trust.
    pub(crate) fn pem(&self) -> String {
        self.0.pem()
    }

    /// A server certificate for `names` (host names or IP addresses; the first is also the
    /// common name), issued by this CA.
    pub(crate) fn issue(&self, names: &[&str]) -> ServerCertificate {
        let key = KeyPair::generate().expect("a key pair generates");
        let sans: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(sans).expect("names are valid SANs");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("stand-in"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &self.0)
            .expect("the CA signs the server certificate");
        ServerCertificate {
            chain: vec![cert.der().clone(), self.0.der().clone()],
            cert_pem: cert.pem(),
            key,
        }
    }
}

/// A server certificate, its key, and the chain up to its CA.
pub(crate) struct ServerCertificate {
    chain: Vec<CertificateDer<'static>>,
    cert_pem: String,
    key: KeyPair,
}

impl ServerCertificate {
    /// The certificate as PEM.
    pub(crate) fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key as PKCS#8 PEM.
    pub(crate) fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A TLS acceptor serving this certificate and its CA's, for HTTP/1.1.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()));
        // An explicit provider: several crates in this test binary enable different rustls
        // backends, so there is no process-wide default to pick.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the default protocol versions are supported")
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), key)
            .expect("the certificate and its key match");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }
}

/// A reqwest client builder that trusts the CA `ca_pem` and no other, and uses no proxy.
pub(crate) fn client_trusting(ca_pem: &str) -> reqwest::ClientBuilder {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("the CA PEM parses");
    reqwest::Client::builder().no_proxy().tls_certs_only([ca])
}
