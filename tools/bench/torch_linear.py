"""torch F.linear on the Wan2.1-1.3B linear shapes at 1000 tokens, 2 threads (bench/results/gemm-kernels-zen3.log).

    .venv/bin/python tools/bench/torch_linear.py
"""
import torch, time
torch.set_num_threads(2)
print(torch.__config__.show().split("\n")[:12])
print("cpu capability", torch.backends.cpu.get_cpu_capability())
m=1000
for name,k,n in [("qkv",1536,4608),("ffn_up",1536,8960),("ffn_down",8960,1536)]:
    x=torch.randn(m,k); w=torch.randn(n,k); b=torch.randn(n)
    with torch.inference_mode():
        for _ in range(3): torch.nn.functional.linear(x,w,b)
        ts=[]
        for _ in range(10):
            t=time.perf_counter(); torch.nn.functional.linear(x,w,b); ts.append(time.perf_counter()-t)
    ts.sort()
    print(f"{name} min {ts[0]*1e3:.1f} ms median {ts[5]*1e3:.1f} ms  {2*m*n*k/ts[5]/1e9:.0f} GFLOP/s")
