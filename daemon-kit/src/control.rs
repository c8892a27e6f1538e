//! The daemon's Unix control socket: where `tunneld status`, `addrd
//! users` and the like reach the running daemon.
//!
//! [`ControlSocket::bind`] creates the socket's directory with mode 0700
//! if it is missing, binds the socket and sets its mode to 0600, so only
//! the daemon's user (or root) can ask anything. A socket file nobody
//! answers on (a daemon that died) is replaced; one a daemon answers on
//! is refused ([`BindError::InUse`]): that is how a second daemon with
//! the same config learns it must not start. Dropping the
//! [`ControlSocket`] removes the file. [`ControlSocket::serve`] runs the
//! daemon's own handler on each connection, in its own task; what is
//! asked and answered is the daemon's business.

use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, warn};

/// Why [`ControlSocket::bind`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// A running daemon answers on the socket.
    #[error(
        "control socket {}: in use by a running daemon (another {daemon} is running)",
        path.display()
    )]
    InUse {
        /// The socket path.
        path: PathBuf,
        /// The daemon's name, for the message.
        daemon: &'static str,
    },
    /// Something that is not a socket is at the path.
    #[error("{}: exists and is not a socket", .0.display())]
    NotASocket(PathBuf),
    /// Creating the directory, removing the stale file, binding, or
    /// setting the mode failed.
    #[error("control socket {}: {source}", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The daemon's listening control socket. Dropping it removes the file.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Create the parent directory (0700) if missing, replace a stale
    /// socket file, bind and set the socket's mode to 0600. `daemon` names
    /// the daemon in [`BindError::InUse`]. Must run inside a tokio
    /// runtime.
    pub async fn bind(path: &Path, daemon: &'static str) -> Result<Self, BindError> {
        let io_error = |source| BindError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .map_err(io_error)?;
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(BindError::NotASocket(path.to_owned()))
            }
            Ok(_) => {
                if UnixStream::connect(path).await.is_ok() {
                    return Err(BindError::InUse {
                        path: path.to_owned(),
                        daemon,
                    });
                }
                debug!(path = %path.display(), "removing stale control socket");
                std::fs::remove_file(path).map_err(io_error)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(e)),
        }
        let listener = UnixListener::bind(path).map_err(io_error)?;
        let socket = ControlSocket {
            listener,
            path: path.to_owned(),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_error)?;
        Ok(socket)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `answer` on every connection, each in its own task, until this
    /// future is dropped. A failed connection is logged at debug level; a
    /// failed accept (EMFILE and the like) is logged and retried after
    /// 100 ms, never in a spin.
    pub async fn serve<F, Fut>(&self, answer: F)
    where
        F: Fn(UnixStream) -> Fut,
        Fut: Future<Output = io::Result<()>> + Send + 'static,
    {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let answered = answer(stream);
                    tokio::spawn(async move {
                        if let Err(error) = answered.await {
                            debug!(%error, "control connection failed");
                        }
                    });
                }
                Err(error) => {
                    warn!(%error, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.path) {
            if error.kind() != io::ErrorKind::NotFound {
                warn!(path = %self.path.display(), %error, "could not remove the control socket");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn modes_stale_sockets_live_sockets_and_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/d.sock");
        let socket = ControlSocket::bind(&path, "testd").await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);

        // A second daemon is refused while the first answers.
        let served = tokio::spawn(async move {
            socket
                .serve(|mut stream| async move {
                    let mut request = String::new();
                    stream.read_to_string(&mut request).await?;
                    stream.write_all(request.to_uppercase().as_bytes()).await
                })
                .await;
        });
        let err = ControlSocket::bind(&path, "testd").await.unwrap_err();
        assert!(
            err.to_string().contains("another testd is running"),
            "{err}"
        );
        let mut client = UnixStream::connect(&path).await.unwrap();
        client.write_all(b"status").await.unwrap();
        client.shutdown().await.unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "STATUS");

        // Dropping the socket removes the file.
        served.abort();
        let _ = served.await;
        assert!(!path.exists());

        // A stale socket file (nobody answers) is replaced; a plain file
        // is refused.
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        assert!(path.exists());
        let again = ControlSocket::bind(&path, "testd").await.unwrap();
        drop(again);
        std::fs::write(&path, b"not a socket").unwrap();
        let err = ControlSocket::bind(&path, "testd").await.unwrap_err();
        assert!(matches!(err, BindError::NotASocket(_)), "{err}");
    }
}
