//! The envelope every frame carries. Both sides send requests (the broker
//! uses them for check-backs and notices), each side numbers its own
//! requests, and responses name the id they answer, so answers may come back
//! in any order and a connection can carry many requests at once.

use crate::error::WireError;
use crate::request::{Request, Response};
use serde::{Deserialize, Serialize};

/// One frame on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// A request that expects a response carrying the same id.
    Request {
        /// Chosen by the sender, unique among its requests in flight.
        id: u64,
        /// What is asked.
        body: Request,
    },
    /// A request that gets no response at all (one-way send).
    Oneway {
        /// What is asked.
        body: Request,
    },
    /// The answer to the request with `id`. Id 0 answers a frame that could
    /// not be decoded far enough to know its id.
    Response {
        /// The id of the request answered.
        id: u64,
        /// The outcome.
        body: Result<Response, WireError>,
    },
}
