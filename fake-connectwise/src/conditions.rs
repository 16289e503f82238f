//! A small parser/evaluator for ConnectWise `conditions` strings, enough for tests:
//! `field op value` joined by `and`/`or` with parentheses; ops `= != < <= > >= contains like
//! in (…) not in (…)`; values `"string"` (backslash escapes), numbers, `true`/`false`/`null`,
//! `[date]`. Fields are slash paths (`status/name`), matched case-insensitively.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
    Date(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    Like,
    NotContains,
    NotLike,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(Vec<String>, Op, Lit),
    In(Vec<String>, Vec<Lit>, bool),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Lit(Lit),
    Op(Op),
    LParen,
    RParen,
    Comma,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '"' | '\'' => {
                let quote = c;
                i += 1;
                let mut v = String::new();
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string".into()),
                        Some('\\') => {
                            let n = chars.get(i + 1).ok_or("dangling escape")?;
                            v.push(*n);
                            i += 2;
                        }
                        Some(ch) if *ch == quote => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            v.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Lit(Lit::Str(v)));
            }
            '[' => {
                let end = chars[i..].iter().position(|&ch| ch == ']').ok_or("unterminated date")?;
                let v: String = chars[i + 1..i + end].iter().collect();
                out.push(Tok::Lit(Lit::Date(v)));
                i += end + 1;
            }
            '=' => {
                out.push(Tok::Op(Op::Eq));
                i += 1
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Op(Op::Ne));
                i += 2
            }
            '<' | '>' => {
                let eq = chars.get(i + 1) == Some(&'=');
                let op = match (c, eq) {
                    ('<', true) => Op::Le,
                    ('<', false) => Op::Lt,
                    ('>', true) => Op::Ge,
                    _ => Op::Gt,
                };
                out.push(Tok::Op(op));
                i += if eq { 2 } else { 1 };
            }
            c if c.is_ascii_digit() || c == '-' => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let t: String = chars[start..i].iter().collect();
                let n = t.parse::<f64>().map_err(|_| format!("bad number {t}"))?;
                out.push(Tok::Lit(Lit::Num(n)));
            }
            c if c.is_alphanumeric() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '/' | '.')) {
                    i += 1;
                }
                let w: String = chars[start..i].iter().collect();
                out.push(match w.to_ascii_lowercase().as_str() {
                    "true" => Tok::Lit(Lit::Bool(true)),
                    "false" => Tok::Lit(Lit::Bool(false)),
                    "null" => Tok::Lit(Lit::Null),
                    "contains" => Tok::Op(Op::Contains),
                    "like" => Tok::Op(Op::Like),
                    _ => Tok::Ident(w),
                });
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
    allowed: &'a [&'a str],
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case(kw))
    }
    fn expr(&mut self) -> Result<Expr, String> {
        let mut left = self.term()?;
        while self.is_kw("or") {
            self.pos += 1;
            let right = self.term()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }
    fn term(&mut self) -> Result<Expr, String> {
        let mut left = self.factor()?;
        while self.is_kw("and") {
            self.pos += 1;
            let right = self.factor()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }
    fn factor(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::LParen) => {
                let e = self.expr()?;
                match self.next() {
                    Some(Tok::RParen) => Ok(e),
                    _ => Err("expected )".into()),
                }
            }
            Some(Tok::Ident(field)) => {
                let lower = field.to_ascii_lowercase();
                if !self.allowed.contains(&lower.as_str()) {
                    return Err(format!("unknown field {field}"));
                }
                let path: Vec<String> = lower.split('/').map(str::to_string).collect();
                let negate = if self.is_kw("not") {
                    self.pos += 1;
                    true
                } else {
                    false
                };
                if self.is_kw("in") {
                    self.pos += 1;
                    if self.next() != Some(Tok::LParen) {
                        return Err("expected ( after in".into());
                    }
                    let mut lits = Vec::new();
                    loop {
                        match self.next() {
                            Some(Tok::Lit(l)) => lits.push(l),
                            _ => return Err("expected a value in list".into()),
                        }
                        match self.next() {
                            Some(Tok::Comma) => continue,
                            Some(Tok::RParen) => break,
                            _ => return Err("expected , or )".into()),
                        }
                    }
                    return Ok(Expr::In(path, lits, negate));
                }
                let op = match (self.next(), negate) {
                    (Some(Tok::Op(Op::Contains)), true) => Op::NotContains,
                    (Some(Tok::Op(Op::Like)), true) => Op::NotLike,
                    (Some(Tok::Op(op)), false) => op,
                    _ => return Err(format!("expected an operator after {field}")),
                };
                match self.next() {
                    Some(Tok::Lit(l)) => Ok(Expr::Cmp(path, op, l)),
                    _ => Err(format!("expected a value after {field}")),
                }
            }
            _ => Err("expected a condition".into()),
        }
    }
}

/// Parses `conditions`; `allowed` lists the lower-case field paths the resource knows.
pub(crate) fn parse(s: &str, allowed: &[&str]) -> Result<Expr, String> {
    let toks = tokenize(s)?;
    let mut p = Parser { toks: &toks, pos: 0, allowed };
    let e = p.expr()?;
    if p.pos != toks.len() {
        return Err("unexpected trailing input".into());
    }
    Ok(e)
}

fn lookup<'v>(item: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut cur = item;
    for seg in path {
        let obj = cur.as_object()?;
        cur = obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(seg)).map(|(_, v)| v)?;
    }
    Some(cur)
}

fn like(hay: &str, pattern: &str) -> bool {
    // '%' matches any sequence; case-insensitive.
    let hay = hay.to_lowercase();
    let parts: Vec<String> = pattern.to_lowercase().split('%').map(String::from).collect();
    if parts.len() == 1 {
        return hay == parts[0];
    }
    let mut pos = 0;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        if i == 0 {
            if !hay.starts_with(part.as_str()) {
                return false;
            }
            pos = part.len();
        } else if i == parts.len() - 1 {
            return hay.len() >= pos + part.len() && hay[pos..].ends_with(part.as_str());
        } else {
            match hay[pos..].find(part.as_str()) {
                Some(at) => pos += at + part.len(),
                None => return false,
            }
        }
    }
    true
}

fn compare(v: Option<&Value>, op: Op, lit: &Lit) -> bool {
    use std::cmp::Ordering;
    let v = v.unwrap_or(&Value::Null);
    let ord: Option<Ordering> = match (v, lit) {
        (Value::Null, Lit::Null) => Some(Ordering::Equal),
        (_, Lit::Null) | (Value::Null, _) => None,
        (Value::String(s), Lit::Str(l)) => Some(s.to_lowercase().cmp(&l.to_lowercase())),
        (Value::String(s), Lit::Date(l)) => Some(s.as_str().cmp(l.as_str())),
        (Value::String(s), Lit::Num(n)) => s.parse::<f64>().ok().and_then(|x| x.partial_cmp(n)),
        (Value::Number(x), Lit::Num(n)) => x.as_f64().and_then(|x| x.partial_cmp(n)),
        (Value::Number(x), Lit::Str(s)) => match (x.as_f64(), s.parse::<f64>()) {
            (Some(a), Ok(b)) => a.partial_cmp(&b),
            _ => None,
        },
        (Value::Bool(b), Lit::Bool(l)) => Some(b.cmp(l)),
        _ => None,
    };
    let text = match v {
        Value::String(s) => Some(s.as_str()),
        _ => None,
    };
    let pat = match lit {
        Lit::Str(s) | Lit::Date(s) => Some(s.as_str()),
        _ => None,
    };
    match op {
        Op::Eq => ord == Some(Ordering::Equal),
        Op::Ne => ord != Some(Ordering::Equal),
        Op::Lt => ord == Some(Ordering::Less),
        Op::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
        Op::Gt => ord == Some(Ordering::Greater),
        Op::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
        Op::Contains | Op::NotContains => {
            let hit = matches!((text, pat), (Some(t), Some(p)) if t.to_lowercase().contains(&p.to_lowercase()));
            hit == (op == Op::Contains)
        }
        Op::Like | Op::NotLike => {
            let hit = matches!((text, pat), (Some(t), Some(p)) if like(t, p));
            hit == (op == Op::Like)
        }
    }
}

/// Whether `item` satisfies `e`.
pub(crate) fn eval(e: &Expr, item: &Value) -> bool {
    match e {
        Expr::And(a, b) => eval(a, item) && eval(b, item),
        Expr::Or(a, b) => eval(a, item) || eval(b, item),
        Expr::Cmp(path, op, lit) => compare(lookup(item, path), *op, lit),
        Expr::In(path, lits, negate) => {
            let v = lookup(item, path);
            lits.iter().any(|l| compare(v, Op::Eq, l)) != *negate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const F: &[&str] = &["deletedflag", "status/name", "company/id", "externalxref", "name"];

    fn m(c: &str, v: Value) -> bool {
        eval(&parse(c, F).unwrap(), &v)
    }

    #[test]
    fn basic_conditions() {
        let c = json!({"deletedFlag": false, "status": {"name": "Active"}, "company": {"id": 5}, "name": "Acme Inc"});
        assert!(m(r#"deletedFlag=false and status/name="Active""#, c.clone()));
        assert!(m(r#"deletedFlag = false AND status/name = "active""#, c.clone()));
        assert!(!m(r#"status/name="Inactive""#, c.clone()));
        assert!(m("company/id=5", c.clone()));
        assert!(m("company/id in (1,5)", c.clone()));
        assert!(m("company/id not in (1,2)", c.clone()));
        assert!(m(r#"name like "acme%""#, c.clone()));
        assert!(m(r#"name contains "INC""#, c.clone()));
        assert!(m(r#"(company/id=4 or company/id=5) and deletedFlag=false"#, c.clone()));
        assert!(m(r#"externalXRef="a\"b""#, json!({"externalXRef": "a\"b"})));
        assert!(parse("bogus=1", F).is_err());
        assert!(parse("deletedFlag=", F).is_err());
        assert!(parse("deletedFlag=false and", F).is_err());
    }
}
