//! Whole-step CUDA graphs over a planned arena ([`crate::backend::arena`]).
//!
//! [`CudaBackend::capture`](crate::backend::Backend::capture) runs the step three ways:
//! 1. eagerly with every allocation and release recorded: this also makes every cuBLASLt plan
//!    and loads every kernel, so nothing below calls a non-capturable API;
//! 2. from the recorded lifetimes, offsets in one arena (one allocation for the whole step);
//! 3. once more under stream capture, each allocation served from the arena in recorded order,
//!    so the graph's kernels read and write fixed addresses.
//!
//! A replay copies the new inputs into the captured input buffers, launches the graph (one driver
//! call for the whole step) and copies the output out of the arena. Per-step scalars (the
//! timestep) must reach the step as device tensors, inputs of the capture: values passed to a
//! kernel by argument would be frozen into the graph.

use super::backend::CudaBackend;
use crate::backend::arena::peak_live_bytes;
use crate::backend::{CaptureReport, CapturedStep, StepFn};
use crate::error::{Error, Result};
use crate::Tensor;
use cudarc::driver::sys;
use cudarc::driver::CudaGraph;

/// Arena offsets are multiples of this (cudaMalloc's own alignment).
pub const ARENA_ALIGN: usize = 256;

/// A captured step on one backend.
pub struct CudaStep<'a> {
    be: &'a CudaBackend,
    graph: CudaGraph,
    /// The buffers the graph reads its inputs from (own allocations, outside the arena).
    inputs: Vec<Tensor>,
    /// The step's output inside the arena: overwritten by every replay.
    output: Tensor,
    report: CaptureReport,
}

impl CapturedStep for CudaStep<'_> {
    fn replay(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        check_inputs(&self.inputs, inputs)?;
        for (slot, x) in self.inputs.iter().zip(inputs) {
            self.be.copy_into(x, slot)?;
        }
        self.graph.launch().map_err(|e| Error::Msg(format!("cuda graph launch: {e}")))?;
        // The allocator is plain again after the capture: the copy is a buffer of its own.
        self.be.copy(&self.output)
    }

    fn report(&self) -> CaptureReport {
        self.report
    }
}

/// Replay inputs must match the captured ones in number, shape and dtype.
pub fn check_inputs(captured: &[Tensor], given: &[&Tensor]) -> Result<()> {
    if captured.len() != given.len() {
        return Err(Error::Msg(format!("captured step: {} inputs given, {} captured", given.len(), captured.len())));
    }
    for (i, (c, g)) in captured.iter().zip(given).enumerate() {
        if c.shape() != g.shape() || c.dtype() != g.dtype() {
            return Err(Error::Msg(format!(
                "captured step: input {i} is {:?} {}, the capture took {:?} {} (capture again for a new shape)",
                g.shape(),
                g.dtype(),
                c.shape(),
                c.dtype()
            )));
        }
    }
    Ok(())
}

impl CudaBackend {
    /// See [`crate::backend::Backend::capture`].
    pub(super) fn capture_step<'a>(&'a self, inputs: &[&Tensor], step: StepFn<'_>) -> Result<CudaStep<'a>> {
        // Before recording: the input buffers are plain allocations, outside the arena.
        let slots: Vec<Tensor> = inputs.iter().map(|x| self.copy(x)).collect::<Result<_>>()?;
        // 1. The recorded eager run.
        self.allocator().record();
        let recorded = step(&slots);
        let planned = recorded.and_then(|out| {
            self.synchronize()?;
            let planned = self.allocator().plan(ARENA_ALIGN);
            drop(out);
            planned
        });
        let (plan, lifetimes) = match planned {
            Ok(p) => p,
            Err(e) => {
                self.allocator().stop();
                return Err(e);
            }
        };
        // 2. The arena.
        self.set_arena(plan.total.max(ARENA_ALIGN))?;
        // 3. The captured run.
        let graph = self.captured(|| step(&slots));
        self.allocator().stop();
        let (graph, output) = graph?;
        let nodes = graph_nodes(&graph)?;
        graph.upload().map_err(|e| Error::Msg(format!("cuda graph upload: {e}")))?;
        let report = CaptureReport {
            allocations: lifetimes.len(),
            allocated_bytes: lifetimes.iter().map(|l| l.bytes).sum(),
            peak_live_bytes: peak_live_bytes(&lifetimes, ARENA_ALIGN),
            arena_bytes: plan.total,
            graph_nodes: nodes,
        };
        Ok(CudaStep { be: self, graph, inputs: slots, output, report })
    }

    /// Runs `f` under stream capture; the capture is ended whatever `f` returns.
    fn captured(&self, f: impl FnOnce() -> Result<Tensor>) -> Result<(CudaGraph, Tensor)> {
        let stream = self.stream();
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| Error::Msg(format!("cuda graph capture: {e}")))?;
        let out = f();
        let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0));
        let out = out?;
        let graph =
            graph.map_err(|e| Error::Msg(format!("cuda graph capture (an op that cannot be captured?): {e}")))?;
        Ok((graph.ok_or_else(|| Error::Msg("cuda graph capture: the step launched nothing".into()))?, out))
    }
}

/// Nodes of a captured graph.
fn graph_nodes(graph: &CudaGraph) -> Result<usize> {
    let mut n = 0usize;
    // SAFETY: a live graph; a null node array asks only for the count.
    unsafe { sys::cuGraphGetNodes(graph.cu_graph(), std::ptr::null_mut(), &mut n) }
        .result()
        .map_err(|e| Error::Msg(format!("cuda graph nodes: {e}")))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu;
    use crate::HostTensor;

    #[test]
    fn replays_take_the_captured_shapes_only() {
        let be = cpu();
        let t = |shape: &[usize]| be.upload(&HostTensor::zeros(shape.to_vec())).unwrap();
        let captured = [t(&[2, 16, 5, 4, 4]), t(&[2, 1536])];
        check_inputs(&captured, &[&t(&[2, 16, 5, 4, 4]), &t(&[2, 1536])]).unwrap();
        let e = check_inputs(&captured, &[&t(&[2, 16, 5, 4, 4])]).unwrap_err().to_string();
        assert!(e.contains("1 inputs given, 2 captured"), "{e}");
        let e = check_inputs(&captured, &[&t(&[2, 16, 9, 4, 4]), &t(&[2, 1536])]).unwrap_err().to_string();
        assert!(e.contains("input 0 is [2, 16, 9, 4, 4]") && e.contains("capture again"), "{e}");
        let bf16 = be.to_dtype(&t(&[2, 1536]), crate::DType::BF16).unwrap();
        let e = check_inputs(&captured, &[&t(&[2, 16, 5, 4, 4]), &bf16]).unwrap_err().to_string();
        assert!(e.contains("input 1") && e.contains("bf16"), "{e}");
    }

    #[test]
    fn the_cpu_backend_refuses_to_capture_in_one_line() {
        let be = cpu();
        let x = be.upload(&HostTensor::zeros(vec![4])).unwrap();
        let step = |xs: &[Tensor]| be.scalar(crate::backend::BinaryOp::Mul, &xs[0], 2.0);
        let e = be.capture(&[&x], &step).err().expect("refused").to_string();
        assert!(e.contains("cannot capture") && e.contains("--backend cuda") && !e.contains('\n'), "{e}");
        be.synchronize().unwrap();
    }
}
