//! OTP-style supervision trees, bounded mailboxes and crash-safe snapshots for
//! [ractor](https://docs.rs/ractor) actors.
//!
//! - [`Worker`] / [`PersistentWorker`]: the behaviour of a supervised actor and, optionally,
//!   the state it keeps across restarts of itself and of the process.
//! - [`WorkerSpec`], [`SupervisorSpec`], [`ChildSpec`]: child specifications with OTP's restart
//!   types, shutdowns and strategies; [`SupervisorRef`]: `start_child`, `terminate_child`,
//!   `restart_child`, `delete_child`, `which_children`, `count_children`.
//! - [`ActorHandle`]: a typed handle that follows a child across restarts and bounds its
//!   mailbox ([`SendError::MailboxFull`]).
//! - [`snapshot`]: the checksummed snapshot format, the [`snapshot::SnapshotStore`] trait and
//!   its sled implementation with group commit.
//! - [`event`]: the supervision event stream.
//!
//! ```
//! use std::time::Duration;
//! use aios_supervisor::{start_root, Context, SupervisorSpec, Strategy, TreeEnv, Worker, WorkerSpec};
//! use ractor::{ActorProcessingErr, RpcReplyPort};
//!
//! struct Echo;
//! impl Worker for Echo {
//!     type Msg = (String, RpcReplyPort<String>);
//!     type State = ();
//!     async fn init(&self, _: &mut Context<Self::Msg>, _: Option<()>) -> Result<(), ActorProcessingErr> {
//!         Ok(())
//!     }
//!     async fn handle(&self, ctx: &mut Context<Self::Msg>, (text, reply): Self::Msg, _: &mut ()) -> Result<(), ActorProcessingErr> {
//!         ctx.reply(reply, text);
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let root = start_root(SupervisorSpec::new("root", Strategy::OneForOne), TreeEnv::new(None)).await?;
//! let echo = root.supervisor().start_worker(WorkerSpec::new("echo", Echo)).await?;
//! let answer = echo.call(|r| ("hi".to_string(), r), Duration::from_secs(1)).await?;
//! assert_eq!(answer, "hi");
//! root.shutdown(Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod event;
mod handle;
mod registry;
pub mod snapshot;
mod spec;
mod supervisor;
mod worker;

pub use crate::event::{EventBus, EventKind, ExitReason, SupervisionEvent};
pub use crate::handle::{ActorHandle, CallError, MAILBOX_LEN_MAX_DEFAULT, SendError};
pub use crate::registry::Registry;
pub use crate::spec::{
    Backoff, CHILD_ID_LEN_MAX, ChildKind, ChildSpec, Intensity, Restart, Shutdown, StartArgs,
    StartError, Strategy, TreeEnv,
};
pub use crate::supervisor::{
    ChildCounts, ChildInfo, ChildStatus, KILL_WAIT_MAX, Root, SHUTDOWN_REASON,
    START_CHILDREN_BATCH_MAX, SUPERVISOR_CALL_TIMEOUT, SUPERVISOR_MAILBOX_LEN_MAX, SupervisorError,
    SupervisorRef, SupervisorSpec, start_root,
};
pub use crate::worker::{Context, PersistentWorker, Worker, WorkerSpec};
