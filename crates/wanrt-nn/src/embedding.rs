//! A token embedding table, stored in any weight format a [`Linear`] layer supports: read in place
//! from mapped f32 safetensors, half precision, or int8 codes with one scale per row (UMT5-XXL's
//! table is 256 384 × 4096: 4.2 GB in f32, 1.05 GB as int8).

use crate::linear::{Linear, LinearWeight};
use crate::{Error, Result, Tensor, WeightStore};

pub struct Embedding {
    table: LinearWeight,
}

impl Embedding {
    /// Loads `{prefix}.weight` `[vocab, dim]` (and `{prefix}.weight_scale` for int8 codes).
    pub fn load(ws: &WeightStore, prefix: &str, vocab: usize, dim: usize) -> Result<Self> {
        Ok(Embedding { table: Linear::load(ws, prefix, dim, vocab, false)?.weight })
    }

    pub fn from_f32(table: Tensor) -> Result<Self> {
        if table.rank() != 2 {
            return Err(Error::shape("embedding table", "[V, D]", table.shape()));
        }
        Ok(Embedding { table: LinearWeight::F32(table) })
    }

    /// `[vocab, dim]`.
    pub fn shape(&self) -> [usize; 2] {
        self.table.shape()
    }

    /// Bytes held by the table (codes and scales for int8).
    pub fn bytes(&self) -> usize {
        self.table.bytes()
    }

    /// Storage format name (reports).
    pub fn format(&self) -> &'static str {
        self.table.format()
    }

    /// CPU kernel behind [`crate::backend::Backend::embedding`]: rows `ids` → `[ids.len(), dim]`.
    pub fn lookup(&self, ids: &[u32]) -> Result<Tensor> {
        let [vocab, dim] = self.shape();
        let mut out = Vec::with_capacity(ids.len() * dim);
        for &id in ids {
            let row = id as usize;
            if row >= vocab {
                return Err(Error::Msg(format!("embedding: id {row} outside a table of {vocab} rows")));
            }
            self.table.push_row(row, &mut out);
        }
        Tensor::new([ids.len(), dim], out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QuantizedMatrix;
    use crate::weights::RawTensor;
    use crate::DType;

    #[test]
    fn int8_rows_dequantize_and_bad_ids_fail() {
        let (v, d) = (5, 3);
        let table: Vec<f32> = (0..v * d).map(|i| (i as f32 - 7.0) * 0.25).collect();
        let q = QuantizedMatrix::quantize_per_row_symmetric(&table, v, d);
        let mut ws = WeightStore::new("test");
        ws.insert(
            "e.weight",
            RawTensor::from_bytes(DType::I8, vec![v, d], q.data.iter().map(|&c| c as u8).collect()).unwrap(),
        );
        let scales: Vec<u8> = q.scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        ws.insert("e.weight_scale", RawTensor::from_bytes(DType::F32, vec![v], scales).unwrap());
        let e = Embedding::load(&ws, "e", v, d).unwrap();
        assert_eq!(e.format(), "int8-weight");
        let got = e.lookup(&[4, 0, 4]).unwrap();
        let f = Embedding::from_f32(Tensor::new([v, d], table.clone()).unwrap()).unwrap().lookup(&[4, 0, 4]).unwrap();
        assert_eq!(got.shape(), &[3, 3]);
        assert!(got.max_abs_diff(&f).unwrap() <= 0.5 * q.scales.iter().fold(0.0f32, |m, &s| m.max(s)));
        assert_eq!(got.data()[..3], got.data()[6..]);
        assert!(e.lookup(&[5]).is_err());
    }
}
