//! A restricted pickle virtual machine for PyTorch state_dict pickles (`data.pkl`).
//!
//! It mirrors the subset of CPython's `pickle._Unpickler` (protocols 2–5) that
//! `torch.save(state_dict)` produces, and never executes code: a `GLOBAL` /
//! `STACK_GLOBAL` resolves only names on a fixed allow-list into inert markers, and
//! `REDUCE` only "calls" those markers (build an empty dict, describe a tensor view).
//! Anything else — another global, an unknown opcode, a malformed stack — is an error.
//!
//! Memory: every value is reference counted, so `BINGET`/`DUP` never copy data, and all
//! allocations grow with bytes actually read from the pickle, never with a length field.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::pth::TorchDType;

/// Why a pickle was rejected.
#[derive(Debug)]
pub(crate) enum PickleError {
    /// A global outside the allow-list.
    Forbidden { module: String, name: String },
    /// Anything else, with the byte offset it was found at.
    Malformed(String),
}

/// The allow-listed Python globals, as inert markers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    RebuildParameterWithState,
    Storage(TorchDType),
}

impl Global {
    fn resolve(module: &str, name: &str) -> Option<Global> {
        use TorchDType::*;
        Some(match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("torch._utils", "_rebuild_parameter_with_state") => Global::RebuildParameterWithState,
            ("torch", "FloatStorage") => Global::Storage(F32),
            ("torch", "HalfStorage") => Global::Storage(F16),
            ("torch", "BFloat16Storage") => Global::Storage(BF16),
            ("torch", "DoubleStorage") => Global::Storage(F64),
            ("torch", "LongStorage") => Global::Storage(I64),
            ("torch", "IntStorage") => Global::Storage(I32),
            ("torch", "ShortStorage") => Global::Storage(I16),
            ("torch", "CharStorage") => Global::Storage(I8),
            ("torch", "ByteStorage") => Global::Storage(U8),
            ("torch", "BoolStorage") => Global::Storage(Bool),
            _ => return None,
        })
    }
}

/// A storage named by a persistent id: `("storage", torch.XStorage, key, location, numel)`.
#[derive(Debug)]
pub(crate) struct StorageRef {
    pub key: String,
    pub dtype: TorchDType,
    pub numel: u64,
}

/// A tensor view described by `_rebuild_tensor_v2`; checked against its storage later.
#[derive(Debug)]
pub(crate) struct TensorRef {
    pub storage: Rc<StorageRef>,
    pub offset: u64,
    pub shape: Vec<u64>,
    pub strides: Vec<u64>,
}

/// A dict that keeps insertion order and Python's "last write wins" for string keys.
#[derive(Debug, Default)]
pub(crate) struct Dict {
    pub entries: Vec<(Value, Value)>,
    index: HashMap<Rc<str>, usize>,
}

/// The items of a tuple or list.
#[derive(Debug, Default)]
pub(crate) struct Items(pub Vec<Value>);

// Containers drop their children iteratively: a hostile pickle can nest millions of
// levels deep in a few bytes per level, and a recursive drop would overflow the stack.
impl Drop for Items {
    fn drop(&mut self) {
        drop_iteratively(std::mem::take(&mut self.0));
    }
}

impl Drop for Dict {
    fn drop(&mut self) {
        let entries = std::mem::take(&mut self.entries);
        let mut work = Vec::with_capacity(entries.len() * 2);
        for (k, v) in entries {
            work.push(k);
            work.push(v);
        }
        drop_iteratively(work);
    }
}

fn drop_iteratively(mut work: Vec<Value>) {
    while let Some(v) = work.pop() {
        match v {
            Value::Tuple(rc) => {
                if let Ok(mut items) = Rc::try_unwrap(rc) {
                    work.append(&mut items.0);
                }
            }
            Value::List(rc) => {
                if let Ok(cell) = Rc::try_unwrap(rc) {
                    work.append(&mut cell.into_inner().0);
                }
            }
            Value::Dict(rc) => {
                if let Ok(cell) = Rc::try_unwrap(rc) {
                    let mut d = cell.into_inner();
                    for (k, v) in std::mem::take(&mut d.entries) {
                        work.push(k);
                        work.push(v);
                    }
                }
            }
            _ => {}
        }
    }
}

impl Dict {
    fn insert(&mut self, key: Value, value: Value) {
        if let Value::Str(s) = &key {
            if let Some(&i) = self.index.get(s) {
                self.entries[i].1 = value;
                return;
            }
            self.index.insert(s.clone(), self.entries.len());
        }
        self.entries.push((key, value));
    }
}

/// A pickle value. Containers are shared (`Rc`), like Python objects in the memo.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    None,
    // Payloads of non-tensor leaves are kept for `Debug` output only.
    Bool(#[allow(dead_code)] bool),
    Int(i64),
    Float(#[allow(dead_code)] f64),
    Str(Rc<str>),
    Bytes(#[allow(dead_code)] Rc<[u8]>),
    Tuple(Rc<Items>),
    List(Rc<RefCell<Items>>),
    Dict(Rc<RefCell<Dict>>),
    Global(Global),
    Storage(Rc<StorageRef>),
    HostTensor(Rc<TensorRef>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::HostTensor(_) => "tensor",
        }
    }
}

mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const EMPTY_LIST: u8 = b']';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINFLOAT: u8 = b'G';
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const PROTO: u8 = 0x80;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
    pub const STACK_GLOBAL: u8 = 0x93;
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    /// Position of the opcode being executed, for messages.
    at: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

type R<T> = Result<T, PickleError>;

/// Runs the pickle in `data` and returns the value left by `STOP`.
pub(crate) fn unpickle(data: &[u8]) -> R<Value> {
    let mut vm = Vm { data, pos: 0, at: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new() };
    vm.run()
}

impl<'a> Vm<'a> {
    fn err<T>(&self, msg: impl std::fmt::Display) -> R<T> {
        Err(PickleError::Malformed(format!("pickle byte {}: {msg}", self.at)))
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = match self.pos.checked_add(n) {
            Some(end) if end <= self.data.len() => end,
            _ => return self.err(format!("truncated (needs {n} more bytes)")),
        };
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> R<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> R<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> R<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn len_u64(&mut self) -> R<usize> {
        let n = self.u64()?;
        usize::try_from(n).or_else(|_| self.err("length does not fit in memory"))
    }

    fn line(&mut self) -> R<&'a str> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return self.err("unterminated GLOBAL line");
        };
        let s = std::str::from_utf8(&rest[..n]).or_else(|_| self.err("GLOBAL name is not UTF-8"))?;
        self.pos += n + 1;
        Ok(s)
    }

    fn string(&mut self, n: usize) -> R<Value> {
        let b = self.take(n)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(Value::Str(Rc::from(s))),
            Err(_) => self.err("string is not valid UTF-8"),
        }
    }

    fn pop(&mut self) -> R<Value> {
        match self.stack.pop() {
            Some(v) => Ok(v),
            None => self.err("stack underflow"),
        }
    }

    fn top(&mut self) -> R<&mut Value> {
        if self.stack.is_empty() {
            return self.err("stack underflow");
        }
        let n = self.stack.len();
        Ok(&mut self.stack[n - 1])
    }

    fn pop_mark(&mut self) -> R<Vec<Value>> {
        let Some(m) = self.marks.pop() else {
            return self.err("no MARK on the stack");
        };
        if m > self.stack.len() {
            return self.err("MARK above the stack top");
        }
        Ok(self.stack.split_off(m))
    }

    fn memo_get(&mut self, i: u32) -> R<()> {
        match self.memo.get(&i) {
            Some(v) => {
                let v = v.clone();
                self.stack.push(v);
                Ok(())
            }
            None => self.err(format!("memo key {i} was never stored")),
        }
    }

    fn memo_put(&mut self, i: u32) -> R<()> {
        let v = self.top()?.clone();
        self.memo.insert(i, v);
        Ok(())
    }

    fn int_le(&mut self, n: usize) -> R<Value> {
        let b = self.take(n)?;
        if n == 0 {
            return Ok(Value::Int(0));
        }
        if n > 8 {
            // Allow sign-extension bytes only.
            let (low, high) = b.split_at(8);
            let fill = if low[7] & 0x80 != 0 { 0xff } else { 0 };
            if high.iter().any(|&x| x != fill) {
                return self.err("integer does not fit in 64 bits");
            }
            return self.int_bytes(low);
        }
        self.int_bytes(b)
    }

    fn int_bytes(&self, b: &[u8]) -> R<Value> {
        let fill = if b[b.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
        let mut a = [fill; 8];
        a[..b.len()].copy_from_slice(b);
        Ok(Value::Int(i64::from_le_bytes(a)))
    }

    fn run(&mut self) -> R<Value> {
        loop {
            self.at = self.pos;
            let code = self.u8()?;
            match code {
                op::PROTO => {
                    let p = self.u8()?;
                    if p > 5 {
                        return self.err(format!("unsupported pickle protocol {p}"));
                    }
                }
                op::FRAME => {
                    self.u64()?;
                }
                op::STOP => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                op::MARK => self.marks.push(self.stack.len()),
                op::POP => {
                    if self.marks.last() == Some(&self.stack.len()) {
                        self.pop_mark()?;
                    } else {
                        self.pop()?;
                    }
                }
                op::POP_MARK => {
                    self.pop_mark()?;
                }
                op::DUP => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                op::NONE => self.stack.push(Value::None),
                op::NEWTRUE => self.stack.push(Value::Bool(true)),
                op::NEWFALSE => self.stack.push(Value::Bool(false)),
                op::BININT => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64));
                }
                op::BININT1 => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                op::BININT2 => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i64));
                }
                op::LONG1 => {
                    let n = self.u8()? as usize;
                    let v = self.int_le(n)?;
                    self.stack.push(v);
                }
                op::LONG4 => {
                    let n = self.u32()? as usize;
                    let v = self.int_le(n)?;
                    self.stack.push(v);
                }
                op::BINFLOAT => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.stack.push(Value::Float(f64::from_be_bytes(a)));
                }
                op::BINUNICODE => {
                    let n = self.u32()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                op::SHORT_BINUNICODE => {
                    let n = self.u8()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                op::BINUNICODE8 => {
                    let n = self.len_u64()?;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                op::BINSTRING => {
                    let n = self.u32()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                op::SHORT_BINSTRING => {
                    let n = self.u8()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                op::BINBYTES => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    self.stack.push(Value::Bytes(Rc::from(b)));
                }
                op::SHORT_BINBYTES => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    self.stack.push(Value::Bytes(Rc::from(b)));
                }
                op::BINBYTES8 => {
                    let n = self.len_u64()?;
                    let b = self.take(n)?;
                    self.stack.push(Value::Bytes(Rc::from(b)));
                }
                op::EMPTY_DICT => self.stack.push(Value::Dict(Rc::new(RefCell::new(Dict::default())))),
                op::EMPTY_LIST => self.stack.push(Value::List(Rc::new(RefCell::new(Items::default())))),
                op::EMPTY_TUPLE => self.stack.push(Value::Tuple(Rc::new(Items::default()))),
                op::TUPLE => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::new(Items(items))));
                }
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    let n = (code - op::TUPLE1 + 1) as usize;
                    if self.stack.len() < n {
                        return self.err("stack underflow");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(Rc::new(Items(items))));
                }
                op::BINPUT => {
                    let i = self.u8()? as u32;
                    self.memo_put(i)?;
                }
                op::LONG_BINPUT => {
                    let i = self.u32()?;
                    self.memo_put(i)?;
                }
                op::MEMOIZE => {
                    let i = u32::try_from(self.memo.len()).or_else(|_| self.err("memo full"))?;
                    self.memo_put(i)?;
                }
                op::BINGET => {
                    let i = self.u8()? as u32;
                    self.memo_get(i)?;
                }
                op::LONG_BINGET => {
                    let i = self.u32()?;
                    self.memo_get(i)?;
                }
                op::GLOBAL => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = self.global(module, name)?;
                    self.stack.push(g);
                }
                op::STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return self.err("STACK_GLOBAL needs two strings");
                    };
                    let g = self.global(&module, &name)?;
                    self.stack.push(g);
                }
                op::BINPERSID => {
                    let pid = self.pop()?;
                    let s = self.persistent_load(pid)?;
                    self.stack.push(s);
                }
                op::REDUCE => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.reduce(func, args)?;
                    self.stack.push(v);
                }
                op::BUILD => {
                    let _state = self.pop()?;
                    match self.top()? {
                        // OrderedDict state (`_metadata` of a module's state_dict) and tensor
                        // state carry nothing a reader of weights needs.
                        Value::Dict(_) | Value::HostTensor(_) => {}
                        other => {
                            let k = other.kind();
                            return self.err(format!("BUILD on a {k} is not supported"));
                        }
                    }
                }
                op::SETITEM => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.dict_insert(vec![key, value])?;
                }
                op::SETITEMS => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return self.err("SETITEMS with an odd number of items");
                    }
                    self.dict_insert(items)?;
                }
                op::APPEND => {
                    let v = self.pop()?;
                    self.list_extend(vec![v])?;
                }
                op::APPENDS => {
                    let items = self.pop_mark()?;
                    self.list_extend(items)?;
                }
                other => {
                    return self
                        .err(format!("opcode 0x{other:02x} is not used by state_dict pickles and is not supported"))
                }
            }
        }
    }

    fn global(&self, module: &str, name: &str) -> R<Value> {
        match Global::resolve(module, name) {
            Some(g) => Ok(Value::Global(g)),
            None => Err(PickleError::Forbidden { module: module.to_string(), name: name.to_string() }),
        }
    }

    fn dict_insert(&mut self, items: Vec<Value>) -> R<()> {
        let Value::Dict(d) = self.top()? else {
            return self.err("SETITEM(S) on something that is not a dict");
        };
        let d = d.clone();
        let mut d = d.borrow_mut();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.insert(k, v);
        }
        Ok(())
    }

    fn list_extend(&mut self, items: Vec<Value>) -> R<()> {
        let Value::List(l) = self.top()? else {
            return self.err("APPEND(S) on something that is not a list");
        };
        l.borrow_mut().0.extend(items);
        Ok(())
    }

    fn persistent_load(&self, pid: Value) -> R<Value> {
        let Value::Tuple(t) = pid else {
            return self.err("persistent id is not a tuple");
        };
        match &t.0[..] {
            [Value::Str(tag), Value::Global(Global::Storage(dtype)), Value::Str(key), Value::Str(_location), Value::Int(numel)]
                if &**tag == "storage" =>
            {
                let Ok(numel) = u64::try_from(*numel) else {
                    return self.err("negative storage size");
                };
                Ok(Value::Storage(Rc::new(StorageRef { key: key.to_string(), dtype: *dtype, numel })))
            }
            _ => self.err("persistent id is not (\"storage\", torch.<Type>Storage, key, location, numel)"),
        }
    }

    fn ints(&self, v: &Value, what: &str) -> R<Vec<u64>> {
        let Value::Tuple(t) = v else {
            return self.err(format!("tensor {what} is not a tuple"));
        };
        t.0.iter()
            .map(|x| match x {
                Value::Int(i) if *i >= 0 => Ok(*i as u64),
                _ => self.err(format!("tensor {what} holds a non-integer or negative value")),
            })
            .collect()
    }

    fn reduce(&self, func: Value, args: Value) -> R<Value> {
        let Value::Global(g) = func else {
            return self.err(format!("REDUCE calls a {}, not an allowed global", func.kind()));
        };
        let Value::Tuple(args) = args else {
            return self.err("REDUCE arguments are not a tuple");
        };
        let args = &args.0;
        match g {
            Global::OrderedDict => {
                if !args.is_empty() {
                    return self.err("OrderedDict called with arguments");
                }
                Ok(Value::Dict(Rc::new(RefCell::new(Dict::default()))))
            }
            Global::RebuildTensorV2 => {
                if !(6..=7).contains(&args.len()) {
                    return self.err("_rebuild_tensor_v2 expects 6 or 7 arguments");
                }
                let Value::Storage(storage) = &args[0] else {
                    return self.err("_rebuild_tensor_v2: first argument is not a storage");
                };
                let Value::Int(offset) = args[1] else {
                    return self.err("_rebuild_tensor_v2: storage offset is not an integer");
                };
                let Ok(offset) = u64::try_from(offset) else {
                    return self.err("_rebuild_tensor_v2: negative storage offset");
                };
                let shape = self.ints(&args[2], "size")?;
                let strides = self.ints(&args[3], "stride")?;
                if shape.len() != strides.len() {
                    return self.err(format!("tensor has {} dims but {} strides", shape.len(), strides.len()));
                }
                Ok(Value::HostTensor(Rc::new(TensorRef { storage: storage.clone(), offset, shape, strides })))
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => {
                let want = if g == Global::RebuildParameter { 3 } else { 4 };
                if args.len() != want {
                    return self.err(format!("_rebuild_parameter expects {want} arguments"));
                }
                match &args[0] {
                    t @ Value::HostTensor(_) => Ok(t.clone()),
                    _ => self.err("_rebuild_parameter: first argument is not a tensor"),
                }
            }
            Global::Storage(_) => self.err("a storage type cannot be called"),
        }
    }
}

/// Renders a dict key as a name component (`str` as is, `int` in decimal).
pub(crate) fn key_name(k: &Value) -> Option<String> {
    match k {
        Value::Str(s) => Some(s.to_string()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_global_is_named() {
        let p = b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85R.";
        match unpickle(p) {
            Err(PickleError::Forbidden { module, name }) => {
                assert_eq!((module.as_str(), name.as_str()), ("posix", "system"))
            }
            other => panic!("expected Forbidden, got {other:?}"),
        }
    }

    #[test]
    fn ints_and_longs() {
        // LONG1 with 5 bytes: 2^32; LONG1 -1; BININT -2.
        let p = b"\x80\x02(\x8a\x05\x00\x00\x00\x00\x01\x8a\x01\xffJ\xfe\xff\xff\xfft.";
        let Value::Tuple(t) = unpickle(p).unwrap() else { panic!() };
        let v: Vec<i64> =
            t.0.iter()
                .map(|x| match x {
                    Value::Int(i) => *i,
                    _ => panic!(),
                })
                .collect();
        assert_eq!(v, vec![1 << 32, -1, -2]);
    }

    #[test]
    fn deep_nesting_drops_without_overflow() {
        // ")" then a million TUPLE1: a tuple nested 10^6 deep, in 10^6 bytes.
        let mut p = vec![0x80, 2, b')'];
        p.extend(std::iter::repeat_n(0x85u8, 1_000_000));
        p.push(b'.');
        let v = unpickle(&p).unwrap();
        drop(v);
        // A list chain built through the memo, abandoned on the stack by a bad opcode.
        let mut p = vec![0x80, 2, b']', b'q', 0];
        for _ in 0..200_000 {
            p.extend_from_slice(&[b']', b'q', 1, b'a', b'0', b'h', 1]);
        }
        p.push(0xff);
        assert!(unpickle(&p).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678_u64;
        for len in 0..400 {
            let mut p = vec![0x80, 2];
            for _ in 0..len {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                p.push((seed >> 33) as u8);
            }
            let _ = unpickle(&p);
        }
    }
}
