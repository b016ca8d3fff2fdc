//! Everything that keeps a process from being captured faithfully,
//! gathered so that one refusal lists them all (a user fixing one would
//! otherwise meet the next only on the next try).

/// What capture found it cannot restore exactly, in the order found.
#[derive(Debug, Default, Clone)]
pub struct Obstacles(Vec<String>);

impl Obstacles {
    pub fn push(&mut self, why: impl Into<String>) {
        let why = why.into();
        if !self.0.contains(&why) {
            self.0.push(why);
        }
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn list(&self) -> &[String] {
        &self.0
    }
    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
    /// Reword the obstacles from the `from`-th on.
    pub fn reword_from(&mut self, from: usize, f: impl Fn(&str) -> String) {
        for o in self.0.iter_mut().skip(from) {
            *o = f(o);
        }
    }
}
