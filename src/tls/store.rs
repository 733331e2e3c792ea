//! The webhook's Secret: read it, create it, or replace it under optimistic concurrency
//! (`metadata.resourceVersion`), so that of two replicas writing at once exactly one wins.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};

use super::TlsError;
use super::material::Material;

/// Label set on a Secret this process creates.
pub const MANAGED_BY_LABEL: (&str, &str) = ("app.kubernetes.io/managed-by", "mcp-hangar");
/// Type of a Secret this process creates (an existing Secret keeps its type).
pub const SECRET_TYPE: &str = "kubernetes.io/tls";

/// Where the Secret is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The Secret as read, with the version a replace must name.
#[derive(Clone)]
pub struct StoredSecret {
    /// `metadata.resourceVersion`.
    pub resource_version: Option<String>,
    /// The certificate material in it.
    pub material: Material,
    secret: Secret,
}

impl StoredSecret {
    /// Wraps a Secret read from the API.
    pub fn from_secret(secret: Secret) -> Self {
        let material = Material::from_secret_data(secret.data.as_ref().unwrap_or(&BTreeMap::new()));
        StoredSecret { resource_version: secret.resource_version(), material, secret }
    }
}

/// Never prints the Secret's data.
impl fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredSecret")
            .field("resource_version", &self.resource_version)
            .field("material", &self.material)
            .finish_non_exhaustive()
    }
}

/// The outcome of a write.
#[derive(Debug)]
pub enum WriteOutcome {
    /// This write is the Secret's new content.
    Written(Box<StoredSecret>),
    /// Another writer changed (or created, or deleted) the Secret first: read it again.
    Lost,
}

/// Reads and writes one Secret.
#[derive(Clone)]
pub struct SecretStore {
    api: Api<Secret>,
    secret: SecretRef,
}

impl SecretStore {
    /// A store for `secret`.
    pub fn new(client: Client, secret: SecretRef) -> Self {
        SecretStore { api: Api::namespaced(client, &secret.namespace), secret }
    }

    /// The API of the Secret's namespace (to watch it).
    pub fn api(&self) -> &Api<Secret> {
        &self.api
    }

    /// Which Secret this is.
    pub fn secret(&self) -> &SecretRef {
        &self.secret
    }

    /// Reads the Secret; `None` when it does not exist.
    pub async fn read(&self) -> Result<Option<StoredSecret>, TlsError> {
        self.api
            .get_opt(&self.secret.name)
            .await
            .map(|secret| secret.map(StoredSecret::from_secret))
            .map_err(|e| TlsError::kubernetes(format!("reading Secret {}", self.secret), e))
    }

    /// Writes `material` over `base` (the Secret as last read; `None` when it did not exist):
    /// a create, or a replace conditioned on `base`'s resourceVersion.
    pub async fn write(&self, base: Option<&StoredSecret>, material: &Material) -> Result<WriteOutcome, TlsError> {
        let result = match base {
            None => {
                let mut data = BTreeMap::new();
                material.merge_into_secret_data(&mut data);
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(self.secret.name.clone()),
                        namespace: Some(self.secret.namespace.clone()),
                        labels: Some(BTreeMap::from([(
                            MANAGED_BY_LABEL.0.to_string(),
                            MANAGED_BY_LABEL.1.to_string(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    type_: Some(SECRET_TYPE.to_string()),
                    data: Some(data),
                    ..Secret::default()
                };
                self.api.create(&PostParams::default(), &secret).await
            }
            Some(base) => {
                let mut secret = base.secret.clone();
                secret.metadata.resource_version = base.resource_version.clone();
                secret.metadata.managed_fields = None;
                secret.string_data = None;
                material.merge_into_secret_data(secret.data.get_or_insert_with(BTreeMap::new));
                self.api.replace(&self.secret.name, &PostParams::default(), &secret).await
            }
        };
        match result {
            Ok(secret) => Ok(WriteOutcome::Written(Box::new(StoredSecret::from_secret(secret)))),
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(WriteOutcome::Lost),
            Err(e) => Err(TlsError::kubernetes(format!("writing Secret {}", self.secret), e)),
        }
    }
}
