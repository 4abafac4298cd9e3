pub mod duration;
pub mod version;
