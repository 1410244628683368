"""ONNX Runtime flavour of a graph: attention as `com.microsoft.MultiHeadAttention`.

The portable graphs spell attention `MatMul -> Softmax -> MatMul`, which
TensorRT fuses but ONNX Runtime runs as written: it materializes every
`[heads, tokens, tokens]` score matrix. With cross-frame attention the tokens
of a snippet are `L * h * w`: at 768x432 that is 15552 tokens, 4.8 GB of fp32
scores per snippet in the real UNet's first level (5 heads) -- the run dies.
ONNX Runtime's `MultiHeadAttention` contrib op runs flash-style kernels on the
CPU and CUDA (measured here on the CPU: 15552 tokens x 2 heads in 80 MB of
memory instead of 1.9 GB, 0.6 s).

The rewrite is a pure graph transform of the exported graph, so no second
trace is needed and the weights (initializers, external data included) are
shared: the `.ort.onnx` graph points at the same `.onnx.data` file.
"""

from __future__ import annotations

import logging

from torch import nn

log = logging.getLogger("rd_engine")

MS_DOMAIN = "com.microsoft"


def fuse_attention(model, module: nn.Module) -> int:
    """Replace every exported scaled-dot-product attention in `model` (in place) by MultiHeadAttention.

    The pattern the TorchScript exporter writes for `F.scaled_dot_product_attention(q, k, v)` with q, k, v
    of shape [B, heads, N, d] made by `view(B, N, heads, d).transpose(1, 2)`:

        Q = Mul(Transpose(q4, [0,2,1,3]), s)   K = Mul(Transpose(k4, [0,2,3,1]), s)
        out = MatMul(Softmax(MatMul(Q, K), -1), Transpose(v4, [0,2,1,3]))      (q4 etc.: [B, N, heads, d])

    becomes `Transpose(Reshape(MultiHeadAttention(q4 -> [B,N,heads*d], k.., v..), [0,0,heads,d]), [0,2,1,3])`
    (ONNX Runtime cancels the transposes that meet). The head count comes from the attention module
    the node names point at (`/unet/down_blocks.0/.../attn1/Softmax` -> `unet.down_blocks.0...attn1`).

    Args:
        model: An exported ModelProto (weights may stay external).
        module: The traced module (for the head counts).

    Returns:
        How many attentions were fused (the rest are left as they were, with a log line).
    """
    from onnx import helper

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def prod(name, op):
        n = producer.get(name)
        return n if n is not None and n.op_type == op else None

    def perm(node):
        for a in node.attribute:
            if a.name == "perm":
                return list(a.ints)
        return None

    new_nodes: dict[int, list] = {}  # index of the second MatMul -> nodes to insert before it
    fused = 0
    for sm in [n for n in graph.node if n.op_type == "Softmax"]:
        mm1 = prod(sm.input[0], "MatMul")
        users = consumers.get(sm.output[0], [])
        if mm1 is None or len(users) != 1 or users[0].op_type != "MatMul" or users[0].input[0] != sm.output[0]:
            continue
        mm2 = users[0]
        mq, mk = prod(mm1.input[0], "Mul"), prod(mm1.input[1], "Mul")
        tv = prod(mm2.input[1], "Transpose")
        tq = prod(mq.input[0], "Transpose") if mq is not None else None
        tk = prod(mk.input[0], "Transpose") if mk is not None else None
        if None in (tq, tk, tv) or (perm(tq), perm(tk), perm(tv)) != ([0, 2, 1, 3], [0, 2, 3, 1], [0, 2, 1, 3]):
            continue
        attn = _attention_module(module, sm.name)
        if attn is None:
            log.warning("ONNX Runtime graph: attention %s left unfused (no module found for it)", sm.name)
            continue
        heads = int(attn.heads)
        head_dim = int(attn.to_q.out_features) // heads
        tag = sm.name.rsplit("/", 1)[0] + "/ort_mha"
        flat = tag + "/flat_shape"
        split = tag + "/split_shape"
        nodes = [
            helper.make_node("Constant", [], [flat], name=flat, value=helper.make_tensor(flat, 7, [3], [0, 0, -1])),
            helper.make_node(
                "Constant", [], [split], name=split, value=helper.make_tensor(split, 7, [4], [0, 0, heads, head_dim])
            ),
        ]
        flat_in = []
        for role, t in (("q", tq), ("k", tk), ("v", tv)):
            out = f"{tag}/{role}"
            nodes.append(helper.make_node("Reshape", [t.input[0], flat], [out], name=out))
            flat_in.append(out)
        mha = f"{tag}/attention"
        nodes.append(
            helper.make_node("MultiHeadAttention", flat_in, [mha], name=mha, domain=MS_DOMAIN, num_heads=heads)
        )
        nodes.append(helper.make_node("Reshape", [mha, split], [tag + "/bnhd"], name=tag + "/bnhd"))
        nodes.append(
            helper.make_node("Transpose", [tag + "/bnhd"], [mm2.output[0]], name=tag + "/bhnd", perm=[0, 2, 1, 3])
        )
        idx = list(graph.node).index(mm2)
        new_nodes[idx] = nodes
        mm2.output[0] = tag + "/replaced"  # detached: removed below as dead code
        fused += 1
    if not fused:
        return 0
    rebuilt = []
    for i, n in enumerate(graph.node):
        rebuilt += new_nodes.get(i, [])
        rebuilt.append(n)
    del graph.node[:]
    graph.node.extend(_live(rebuilt, [o.name for o in graph.output]))
    known = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    kept = [vi for vi in graph.value_info if vi.name in known]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    if not any(op.domain == MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return fused


def _attention_module(module: nn.Module, node_name: str):
    # "/unet/down_blocks.0/attentions.0/transformer_blocks.0/attn1/Softmax" -> "unet.down_blocks.0....attn1"
    path = ".".join(p for p in node_name.strip("/").split("/")[:-1])
    try:
        sub = module.get_submodule(path)
    except AttributeError:
        return None
    return sub if hasattr(sub, "heads") and hasattr(sub, "to_q") else None


def _live(nodes: list, outputs: list[str]) -> list:
    """The nodes that the graph outputs depend on, in their original (topological) order."""
    need = set(outputs)
    keep = [False] * len(nodes)
    for i in range(len(nodes) - 1, -1, -1):
        n = nodes[i]
        if any(o in need for o in n.output):
            keep[i] = True
            need.update(x for x in n.input if x)
            for a in n.attribute:  # subgraphs (If/Loop) are not produced by this exporter
                if a.g.node:
                    raise ValueError("subgraphs are not supported")
    return [n for n, k in zip(nodes, keep) if k]
