mod config;
mod direct;
mod gateway;
mod listing;
mod plan_hash;
mod policy;
mod ratelimit;
mod reload;
