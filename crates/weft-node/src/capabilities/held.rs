//! What a deploy that removes a key-value store or an object bucket still
//! holding data would lose: the one loss check both make.

use crate::capability::{Action, Change, Deploy};
use crate::node::Node;

/// A removed item of one kind whose data lives in one key-value bucket.
#[derive(Clone, Copy)]
pub(crate) struct Held {
    /// The change kind: `kv`, `bucket`.
    pub kind: &'static str,
    /// What a loss calls it: `store`, `bucket`.
    pub noun: &'static str,
    /// What it holds: `keys`, `objects`.
    pub items: &'static str,
    /// The storage bucket of the item named.
    pub storage: fn(&str) -> String,
}

impl Held {
    /// What removing `name` would lose, if it holds anything.
    pub async fn weigh(self, node: &Node, name: &str) -> Result<Option<String>, String> {
        let (noun, items) = (self.noun, self.items);
        let held = node
            .storage
            .list(&(self.storage)(name), "", None, 1)
            .await
            .map_err(|e| format!("cannot count the {items} of {noun} `{name}`: {e}; try the deploy again"))?;
        Ok((!held.is_empty()).then(|| format!("its {items} would be left behind, unreachable")))
    }

    /// Marks what each removal in `deploy` would lose; the removed names.
    pub async fn weigh_removed(self, node: &Node, deploy: &mut Deploy) -> Result<Vec<String>, String> {
        let mut removed = Vec::new();
        for change in deploy
            .changes
            .iter_mut()
            .filter(|c| c.kind == self.kind && c.action == Action::Removed)
        {
            change.loss = self.weigh(node, &change.name).await?;
            removed.push(change.name.clone());
        }
        Ok(removed)
    }

    /// What removing `removed` would lose now.
    pub async fn losses(self, node: &Node, removed: &[String]) -> Vec<Change> {
        let mut losses = Vec::new();
        for name in removed {
            let mut change = Change::new(self.kind, name, Action::Removed);
            change.loss = self.weigh(node, name).await.unwrap_or_else(Some);
            if change.loss.is_some() {
                losses.push(change);
            }
        }
        losses
    }
}
