pub mod capture;
pub mod check;
pub mod compare;
pub mod inspect;
pub mod pack;
pub mod restore;
pub mod run;
