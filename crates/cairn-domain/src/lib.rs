//! Cairn's domain core: the types that can only hold valid values, the
//! parsing that produces them, the completion rule and the message shapes.
//!
//! Nothing here performs I/O or knows about HTTP, SQL or brokers.

pub mod access;
pub mod completion;
pub mod error;
pub mod event;
pub mod group;
pub mod id;
pub mod json;
pub mod message;
pub mod receiver;
pub mod text;
pub mod time;
pub mod trace;

pub use error::{FieldError, FieldErrors};
pub use event::{CheckedEvent, Event, EventInput, EventView, NewEvent, Unit};
pub use group::{Group, GroupInput, GroupPatch, GroupPatchInput, NewGroup};
pub use id::{CompletionId, EventId, GroupId, MessageId, ReceiverId};
pub use json::JsonText;
pub use receiver::{NewReceiver, Receiver, ReceiverInput, ReceiverSchema};
pub use text::Text;
pub use time::Timestamp;
pub use trace::TraceParent;
