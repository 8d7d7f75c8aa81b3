//! Amazon States Language (ASL), as weft's workflows run it.
//!
//! This crate knows no node, no function runtime and no storage provider:
//! it reads a state machine's definition, checks it as Step Functions'
//! validation does, and evaluates the data processing of each state.
//!
//! - [`path`]: JSONPath as ASL uses it (paths, reference paths, the
//!   context object `$$`), payload templates with `.$` keys, and
//!   `ResultPath` merging.
//! - [`intrinsics`]: the `States.*` intrinsic functions, parsed and
//!   evaluated, nested.
//! - [`definition`]: a definition's JSON read into states, with every
//!   mistake reported at its JSON path.
//! - [`validate`]: the checks across states (targets, reachability,
//!   terminal states) that Step Functions runs before it accepts a
//!   definition.
//! - [`choice`]: Choice rules evaluated against a state's input.
//! - [`jsonata`]: JSONata as ASL uses it: `{% %}` expressions, `$states`,
//!   the functions Step Functions adds, compiled once per definition.
//! - [`variables`]: what `Assign` sets and `$name` reads, scope by scope.
//! - [`fields`]: a state's fields evaluated when it runs, in its query
//!   language, with the variables of its scope.
//! - [`execution`]: the interpreter, which runs an execution state by
//!   state; what it does outside itself (tasks, timers, the clock) goes
//!   through its [`execution::Effects`].
//! - [`durable`]: effects that journal an execution, so that one cut off
//!   is resumed where it was, its journalled tasks not run again.
//! - [`resource`]: what a Task's `Resource` names.
//! - [`local`]: effects for running a definition without deploying it,
//!   its functions mocked.

pub mod choice;
pub mod definition;
pub mod durable;
pub mod execution;
pub mod fields;
pub mod intrinsics;
pub mod jsonata;
pub mod local;
pub mod path;
pub mod resource;
pub mod validate;
pub mod variables;
