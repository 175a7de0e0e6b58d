//! Optional caller authentication beyond the IP allow list, each layer off unless configured:
//! - [`client_cert`]: `X-ARR-ClientCert` pinned to `CLIENT_CERT_THUMBPRINTS`;
//! - [`bearer`]: an Entra ID access token from an allowed caller (`AUTH_*`), with the issuer's
//!   keys cached by [`jwks`];
//! - [`gateway`]: for a caller the bearer layer knows as a gateway (`GATEWAY_CALLERS`), the one
//!   caller behind it that the gateway forwards (`X-Caller-*`).
//!
//! The platform can do both checks too (client-certificate mode, App Service Authentication);
//! these exist so that one misconfigured layer does not open the door. `routes` runs them in the
//! order IP allow list → client certificate → bearer token → gateway → input validation.

pub mod bearer;
pub mod client_cert;
pub mod gateway;
pub mod jwks;
