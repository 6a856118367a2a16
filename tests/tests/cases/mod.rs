mod config;
mod direct;
mod gateway;
mod plan_hash;
mod python_sdk;
