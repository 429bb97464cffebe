//! Property filters in RocketMQ's SQL92 subset: `=, <>, >, >=, <, <=,
//! BETWEEN, IN, IS NULL, IS NOT NULL, AND, OR, NOT`, parentheses, numeric
//! and string ('quoted') literals, `TRUE` and `FALSE`. Identifiers name
//! message properties (`TAGS` is the message's tag). As in RocketMQ, a
//! comparison with a missing property, or of a number with a value that is
//! not one, is false. Parsed once per subscription; a malformed expression
//! is refused with the character position of the problem.

use std::fmt;

/// A literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A number (integers are compared as numbers too).
    Number(f64),
    /// A string.
    Text(String),
    /// A boolean.
    Bool(bool),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `a AND b`
    And(Box<Expr>, Box<Expr>),
    /// `a OR b`
    Or(Box<Expr>, Box<Expr>),
    /// `NOT a`
    Not(Box<Expr>),
    /// `prop <op> literal`
    Compare(String, Cmp, Literal),
    /// `prop [NOT] BETWEEN low AND high`
    Between(String, Literal, Literal, bool),
    /// `prop [NOT] IN (literal, …)`
    In(String, Vec<Literal>, bool),
    /// `prop IS [NOT] NULL`
    IsNull(String, bool),
    /// `TRUE` / `FALSE`
    Const(bool),
}

/// A parse error and where it is (0-based character position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    /// Character position in the expression.
    pub position: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SQL filter error at position {}: {}", self.position, self.message)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Text(String),
    Number(f64),
    Op(Cmp),
    LParen,
    RParen,
    Comma,
    End,
}

/// Longest expression accepted.
pub const MAX_SQL_LEN: usize = 4096;
/// Deepest nesting accepted (parentheses and NOTs).
const MAX_DEPTH: usize = 64;

fn lex(text: &str) -> Result<Vec<(Tok, usize)>, SqlError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |position: usize, message: String| SqlError { position, message };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((Tok::LParen, start));
                i += 1;
            }
            ')' => {
                out.push((Tok::RParen, start));
                i += 1;
            }
            ',' => {
                out.push((Tok::Comma, start));
                i += 1;
            }
            '=' => {
                out.push((Tok::Op(Cmp::Eq), start));
                i += 1;
            }
            '<' | '>' => {
                let next = chars.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    ('<', Some('>')) => (Cmp::Ne, 2),
                    ('<', Some('=')) => (Cmp::Le, 2),
                    ('>', Some('=')) => (Cmp::Ge, 2),
                    ('<', _) => (Cmp::Lt, 1),
                    _ => (Cmp::Gt, 1),
                };
                out.push((Tok::Op(op), start));
                i += len;
            }
            '\'' => {
                let (value, end) = string_literal(&chars, start)?;
                out.push((Tok::Text(value), start));
                i = end;
            }
            c if c.is_ascii_digit()
                || ((c == '-' || c == '.') && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                i += 1;
                while chars.get(i).is_some_and(|ch| ch.is_ascii_digit() || *ch == '.' || *ch == 'e' || *ch == 'E') {
                    i += 1;
                }
                let literal: String = chars[start..i].iter().collect();
                let number = literal.parse::<f64>().map_err(|_| err(start, format!("bad number {literal:?}")))?;
                out.push((Tok::Number(number), start));
            }
            c if c.is_alphabetic() || c == '_' => {
                while chars.get(i).is_some_and(|ch| ch.is_alphanumeric() || *ch == '_' || *ch == '.') {
                    i += 1;
                }
                out.push((Tok::Ident(chars[start..i].iter().collect()), start));
            }
            other => return Err(err(start, format!("unexpected character {other:?}"))),
        }
    }
    out.push((Tok::End, chars.len()));
    Ok(out)
}

/// The string literal whose opening quote is at `start` (`''` inside is a
/// quote) and where the text after it begins.
fn string_literal(chars: &[char], start: usize) -> Result<(String, usize), SqlError> {
    let mut value = String::new();
    let mut i = start + 1;
    loop {
        match chars.get(i) {
            None => return Err(SqlError { position: start, message: "unterminated string".into() }),
            Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                value.push('\'');
                i += 2;
            }
            Some('\'') => return Ok((value, i + 1)),
            Some(ch) => {
                value.push(*ch);
                i += 1;
            }
        }
    }
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    at: usize,
    depth: usize,
}

fn keyword(tok: &Tok, word: &str) -> bool {
    matches!(tok, Tok::Ident(w) if w.eq_ignore_ascii_case(word))
}

const KEYWORDS: [&str; 9] = ["AND", "OR", "NOT", "BETWEEN", "IN", "IS", "NULL", "TRUE", "FALSE"];

impl Parser {
    fn peek(&self) -> &Tok {
        self.toks.get(self.at).map_or(&Tok::End, |(t, _)| t)
    }

    fn pos(&self) -> usize {
        self.toks.get(self.at).map_or(0, |(_, p)| *p)
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, SqlError> {
        Err(SqlError { position: self.pos(), message: message.into() })
    }

    fn bump(&mut self) -> Tok {
        let tok = self.peek().clone();
        self.at += 1;
        tok
    }

    fn eat(&mut self, word: &str) -> bool {
        if keyword(self.peek(), word) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, word: &str) -> Result<(), SqlError> {
        if self.eat(word) {
            Ok(())
        } else {
            self.err(format!("expected {word}"))
        }
    }

    fn or(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.and()?;
        while self.eat("OR") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.not()?;
        while self.eat("AND") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, SqlError> {
        if self.eat("NOT") {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return self.err("expression nested too deeply");
            }
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.predicate()
    }

    fn literal(&mut self) -> Result<Literal, SqlError> {
        match self.bump() {
            Tok::Number(n) => Ok(Literal::Number(n)),
            Tok::Text(t) => Ok(Literal::Text(t)),
            Tok::Ident(w) if w.eq_ignore_ascii_case("TRUE") => Ok(Literal::Bool(true)),
            Tok::Ident(w) if w.eq_ignore_ascii_case("FALSE") => Ok(Literal::Bool(false)),
            _ => {
                self.at -= 1;
                self.err("expected a number, a 'string', TRUE or FALSE")
            }
        }
    }

    fn predicate(&mut self) -> Result<Expr, SqlError> {
        match self.peek().clone() {
            Tok::LParen => {
                self.at += 1;
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return self.err("expression nested too deeply");
                }
                let inner = self.or()?;
                self.depth -= 1;
                if self.bump() != Tok::RParen {
                    self.at -= 1;
                    return self.err("expected )");
                }
                Ok(inner)
            }
            Tok::Ident(w) if w.eq_ignore_ascii_case("TRUE") => {
                self.at += 1;
                Ok(Expr::Const(true))
            }
            Tok::Ident(w) if w.eq_ignore_ascii_case("FALSE") => {
                self.at += 1;
                Ok(Expr::Const(false))
            }
            Tok::Ident(name) if !KEYWORDS.iter().any(|k| name.eq_ignore_ascii_case(k)) => {
                self.at += 1;
                self.after_ident(name)
            }
            Tok::End => self.err("expression ends too early"),
            _ => self.err("expected a property name, ( or NOT"),
        }
    }

    fn after_ident(&mut self, name: String) -> Result<Expr, SqlError> {
        if let Tok::Op(op) = self.peek().clone() {
            self.at += 1;
            let lit = self.literal()?;
            if matches!(lit, Literal::Text(_) | Literal::Bool(_)) && !matches!(op, Cmp::Eq | Cmp::Ne) {
                self.at -= 1;
                return self.err("only = and <> compare strings and booleans");
            }
            return Ok(Expr::Compare(name, op, lit));
        }
        if self.eat("IS") {
            let negated = self.eat("NOT");
            self.expect("NULL")?;
            return Ok(Expr::IsNull(name, negated));
        }
        let negated = self.eat("NOT");
        if self.eat("BETWEEN") {
            let low = self.number()?;
            self.expect("AND")?;
            let high = self.number()?;
            return Ok(Expr::Between(name, low, high, negated));
        }
        if self.eat("IN") {
            if self.bump() != Tok::LParen {
                self.at -= 1;
                return self.err("expected ( after IN");
            }
            let mut list = vec![self.literal()?];
            loop {
                match self.bump() {
                    Tok::Comma => list.push(self.literal()?),
                    Tok::RParen => break,
                    _ => {
                        self.at -= 1;
                        return self.err("expected , or ) in the IN list");
                    }
                }
            }
            return Ok(Expr::In(name, list, negated));
        }
        self.err(format!("expected a comparison, BETWEEN, IN or IS after {name}"))
    }

    fn number(&mut self) -> Result<Literal, SqlError> {
        match self.literal()? {
            n @ Literal::Number(_) => Ok(n),
            _ => {
                self.at -= 1;
                self.err("BETWEEN takes numbers")
            }
        }
    }
}

/// Parses an expression.
pub fn parse(text: &str) -> Result<Expr, SqlError> {
    if text.chars().count() > MAX_SQL_LEN {
        return Err(SqlError { position: MAX_SQL_LEN, message: format!("longer than {MAX_SQL_LEN} characters") });
    }
    let mut parser = Parser { toks: lex(text)?, at: 0, depth: 0 };
    let expr = parser.or()?;
    if *parser.peek() != Tok::End {
        return parser.err("unexpected text after the expression");
    }
    Ok(expr)
}

/// The message fields an expression can see.
pub struct Fields<'a> {
    /// Properties as (name, value), sorted by name, each name once.
    pub properties: &'a [(&'a str, &'a str)],
    /// Tag (`TAGS`).
    pub tags: Option<&'a str>,
}

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&'a str> {
        if name == "TAGS" {
            return self.tags;
        }
        self.property(name)
    }

    /// The property `name`, if set.
    pub fn property(&self, name: &str) -> Option<&'a str> {
        let at = self.properties.binary_search_by_key(&name, |(n, _)| n).ok()?;
        Some(self.properties[at].1)
    }
}

fn compare(value: &str, op: Cmp, lit: &Literal) -> bool {
    let ord = match lit {
        Literal::Number(n) => match value.trim().parse::<f64>() {
            Ok(v) => v.partial_cmp(n),
            Err(_) => return false,
        },
        Literal::Text(t) => Some(value.cmp(t.as_str())),
        Literal::Bool(b) => match value.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true.cmp(b)),
            "false" => Some(false.cmp(b)),
            _ => return false,
        },
    };
    let Some(ord) = ord else { return false };
    match op {
        Cmp::Eq => ord.is_eq(),
        Cmp::Ne => ord.is_ne(),
        Cmp::Gt => ord.is_gt(),
        Cmp::Ge => ord.is_ge(),
        Cmp::Lt => ord.is_lt(),
        Cmp::Le => ord.is_le(),
    }
}

impl Expr {
    /// Evaluates against a message.
    pub fn matches(&self, fields: &Fields<'_>) -> bool {
        match self {
            Expr::And(a, b) => a.matches(fields) && b.matches(fields),
            Expr::Or(a, b) => a.matches(fields) || b.matches(fields),
            Expr::Not(a) => !a.matches(fields),
            Expr::Const(b) => *b,
            Expr::Compare(name, op, lit) => fields.get(name).is_some_and(|v| compare(v, *op, lit)),
            Expr::Between(name, low, high, negated) => {
                fields.get(name).is_some_and(|v| (compare(v, Cmp::Ge, low) && compare(v, Cmp::Le, high)) != *negated)
            }
            Expr::In(name, list, negated) => {
                fields.get(name).is_some_and(|v| list.iter().any(|lit| compare(v, Cmp::Eq, lit)) != *negated)
            }
            Expr::IsNull(name, negated) => fields.get(name).is_none() != *negated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(sql: &str, props: &[(&str, &str)]) -> bool {
        let mut properties = props.to_vec();
        properties.sort_unstable();
        parse(sql).expect(sql).matches(&Fields { properties: &properties, tags: Some("TagA") })
    }

    #[test]
    fn every_operator_evaluates_as_rocketmq_does() {
        let p = [("region", "eu"), ("amount", "150"), ("vip", "true"), ("score", "7.5")];
        assert!(eval("region = 'eu'", &p));
        assert!(eval("region <> 'us'", &p));
        assert!(eval("amount > 100 AND amount >= 150 AND amount < 151 AND amount <= 150", &p));
        assert!(eval("amount BETWEEN 100 AND 200", &p));
        assert!(!eval("amount NOT BETWEEN 100 AND 200", &p));
        assert!(eval("region IN ('eu', 'asia')", &p));
        assert!(eval("region NOT IN ('us')", &p));
        assert!(eval("missing IS NULL AND region IS NOT NULL", &p));
        assert!(eval("NOT (region = 'us') OR FALSE", &p));
        assert!(eval("vip = TRUE AND score > 7", &p));
        assert!(eval("TAGS = 'TagA'", &p));
        // Missing properties and non-numbers compare false, both ways.
        assert!(!eval("missing = 'x'", &p));
        assert!(!eval("missing <> 'x'", &p));
        assert!(!eval("region > 3", &p));
        assert!(!eval("region < 3", &p));
        assert!(eval("a = 'it''s'", &[("a", "it's")]));
        assert!(eval("x = -2.5", &[("x", "-2.5")]));
    }

    #[test]
    fn malformed_expressions_say_where() {
        let cases = [
            ("region = ", 9),
            ("region == 'eu'", 8),
            ("(a = 1", 6),
            ("a = 1 b = 2", 6),
            ("a BETWEEN 1 OR 2", 12),
            ("a IN (1, 2", 10),
            ("a = 'open", 4),
            ("a $ 1", 2),
            ("a > 'x'", 4),
            ("AND a = 1", 0),
        ];
        for (sql, position) in cases {
            let err = parse(sql).expect_err(sql);
            assert_eq!(err.position, position, "{sql}: {err}");
        }
        assert!(parse(&"NOT ".repeat(100)).is_err());
        assert!(parse(&"(".repeat(100)).is_err());
    }
}
