//! A Secret volume as the kubelet's atomic writer updates it: every version in a timestamped
//! `..<generation>` directory, `..data` swapped to it with one atomic rename, and the files
//! read through `tls.crt -> ..data/tls.crt` links.

use std::path::Path;

/// Publishes a certificate and key as a new generation of the mount.
pub fn publish(mount: &Path, generation: &str, cert: &str, key: &str) {
    let data_dir = mount.join(format!("..{generation}"));
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::write(data_dir.join("tls.crt"), cert).unwrap();
    std::fs::write(data_dir.join("tls.key"), key).unwrap();
    let staging = mount.join("..data_tmp");
    let _ = std::fs::remove_file(&staging);
    std::os::unix::fs::symlink(format!("..{generation}"), &staging).unwrap();
    std::fs::rename(&staging, mount.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        let link = mount.join(file);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{file}"), &link).unwrap();
        }
    }
}
