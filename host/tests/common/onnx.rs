//! Just enough protobuf to write an ONNX model: `y = x * 2 + 1`, input `x`
//! of shape [N, 4]. Shared by the tests that need a real model file.

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}
fn int(field: u64, v: u64, out: &mut Vec<u8>) {
    varint(field << 3, out);
    varint(v, out);
}
fn bytes(field: u64, b: &[u8], out: &mut Vec<u8>) {
    varint((field << 3) | 2, out);
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}
fn msg(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::new();
    f(&mut v);
    v
}

const FLOAT: u64 = 1;

fn scalar(name: &str, value: f32) -> Vec<u8> {
    msg(|t| {
        int(1, 1, t); // dims: [1]
        int(2, FLOAT, t);
        bytes(8, name.as_bytes(), t);
        bytes(9, &value.to_le_bytes(), t);
    })
}

fn value_info(name: &str) -> Vec<u8> {
    let shape = msg(|s| {
        bytes(1, &msg(|d| bytes(2, b"N", d)), s);
        bytes(1, &msg(|d| int(1, 4, d)), s);
    });
    let tensor = msg(|t| {
        int(1, FLOAT, t);
        bytes(2, &shape, t);
    });
    msg(|v| {
        bytes(1, name.as_bytes(), v);
        bytes(2, &msg(|ty| bytes(1, &tensor, ty)), v);
    })
}

fn node(op: &str, inputs: [&str; 2], output: &str) -> Vec<u8> {
    msg(|n| {
        for i in inputs {
            bytes(1, i.as_bytes(), n);
        }
        bytes(2, output.as_bytes(), n);
        bytes(3, op.as_bytes(), n);
        bytes(4, op.as_bytes(), n);
    })
}

pub fn mul_add_model() -> Vec<u8> {
    let graph = msg(|g| {
        bytes(1, &node("Mul", ["x", "two"], "x2"), g);
        bytes(1, &node("Add", ["x2", "one"], "y"), g);
        bytes(2, b"tiny", g);
        bytes(5, &scalar("two", 2.0), g);
        bytes(5, &scalar("one", 1.0), g);
        bytes(11, &value_info("x"), g);
        bytes(12, &value_info("y"), g);
    });
    msg(|m| {
        int(1, 8, m); // ir_version
        bytes(7, &graph, m);
        bytes(8, &msg(|o| int(2, 13, o)), m); // opset 13
    })
}
