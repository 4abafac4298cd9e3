pub mod duration;
pub mod text;
pub mod version;
