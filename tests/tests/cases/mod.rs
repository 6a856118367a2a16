mod config;
mod direct;
mod gateway;
mod identity;
mod plan_hash;
