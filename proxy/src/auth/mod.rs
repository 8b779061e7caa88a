//! Authentication: a tokens file of hashed secrets, each with a role and the
//! orgs it may act for. Secrets are high-entropy random strings, so a single
//! SHA-256 is the right hash (no password stretching needed); comparisons are
//! constant-time, and every entry is compared so timing says nothing.

mod file;
pub mod store;
pub mod token;

pub use store::{AuthError, TokenStore};
pub use token::{hash_secret, new_secret, Role, TokenEntry, TokensFile};
