pub mod compress;
pub mod config;
pub mod cors;
pub mod etag;
pub mod fault;
pub mod headers;
pub mod shed;
pub mod toggle;
