// GPT (GPT-2 architecture), as pinned in DESIGN.md §1: pre-LayerNorm blocks
// (eps 1e-5), learned position embeddings, causal multi-head attention scaled
// by 1/sqrt(head dim), MLP 4*hidden with tanh GELU, final LayerNorm, output
// projection tied to the token embedding, mean token cross-entropy. Parameter
// names and layouts are Hugging Face GPT-2's without `transformer.`.
//
// Sizes are hyper-parameters (defaults: GPT-2 small); override them with
// `megac --set layers=2 --set hidden=64 ...` (`batch` is the micro-batch).

!ids = tensor<?x?xi32>    // [batch, seq]
!act = tensor<?x?x?xf32>  // [batch, seq, features]
!mat = tensor<?x?xf32>
!vec = tensor<?xf32>

module attributes {mega.hparams = {layers = 12, hidden = 768, heads = 12,
                                   vocab = 50257, seq = 1024, batch = 8}} {
  func.func @gpt() {
    %tokens = mega.input "tokens" [batch, seq] : !ids
    %targets = mega.input "targets" [batch, seq] : !ids

    // Token embedding plus position embedding (wpe [seq, hidden] is added to
    // every sequence of the batch: position p gets row p).
    %wte = mega.param "wte.weight" [vocab, hidden] init normal(0.02) : !mat
    %wpe = mega.param "wpe.weight" [seq, hidden] init normal(0.02) : !mat
    %tok = mega.embedding %tokens, %wte : !ids, !mat -> !act
    %x = mega.add %tok, %wpe : !act, !mat -> !act

    // The transformer blocks h.0 ... h.{layers-1}.
    %h = mega.repeat %x count(layers) prefix "h" : !act -> !act {
    ^bb0(%in: !act):
      %ln1_w = mega.param "ln_1.weight" [hidden] init ones : !vec
      %ln1_b = mega.param "ln_1.bias" [hidden] init zeros : !vec
      %a_in, %m1, %r1 = mega.layer_norm %in, %ln1_w, %ln1_b {eps = 1.0e-5}
          : !act, !vec, !vec -> !act, !vec, !vec
      %qkv_w = mega.param "attn.c_attn.weight" [hidden, 3*hidden] init normal(0.02) : !mat
      %qkv_b = mega.param "attn.c_attn.bias" [3*hidden] init zeros : !vec
      %proj_w = mega.param "attn.c_proj.weight" [hidden, hidden] init normal(0.02) scaled_init : !mat
      %proj_b = mega.param "attn.c_proj.bias" [hidden] init zeros : !vec
      %a = mega.attention %a_in, %qkv_w, %qkv_b, %proj_w, %proj_b heads(heads) causal
          : !act, !mat, !vec, !mat, !vec -> !act
      %res1 = mega.add %in, %a : !act, !act -> !act

      %ln2_w = mega.param "ln_2.weight" [hidden] init ones : !vec
      %ln2_b = mega.param "ln_2.bias" [hidden] init zeros : !vec
      %m_in, %m2, %r2 = mega.layer_norm %res1, %ln2_w, %ln2_b {eps = 1.0e-5}
          : !act, !vec, !vec -> !act, !vec, !vec
      %fc_w = mega.param "mlp.c_fc.weight" [hidden, 4*hidden] init normal(0.02) : !mat
      %fc_b = mega.param "mlp.c_fc.bias" [4*hidden] init zeros : !vec
      %fc = mega.linear %m_in, %fc_w, %fc_b : !act, !mat, !vec -> !act
      %g = mega.gelu %fc : !act -> !act
      %mproj_w = mega.param "mlp.c_proj.weight" [4*hidden, hidden] init normal(0.02) scaled_init : !mat
      %mproj_b = mega.param "mlp.c_proj.bias" [hidden] init zeros : !vec
      %m = mega.linear %g, %mproj_w, %mproj_b : !act, !mat, !vec -> !act
      %out = mega.add %res1, %m : !act, !act -> !act
      mega.yield %out : !act
    }

    // Final LayerNorm, output projection tied to wte, loss.
    %lnf_w = mega.param "ln_f.weight" [hidden] init ones : !vec
    %lnf_b = mega.param "ln_f.bias" [hidden] init zeros : !vec
    %y, %mf, %rf = mega.layer_norm %h, %lnf_w, %lnf_b {eps = 1.0e-5}
        : !act, !vec, !vec -> !act, !vec, !vec
    %logits = mega.matmul %y, %wte {transpose_b} : !act, !mat -> !act
    %loss, %lse = mega.cross_entropy %logits, %targets : !act, !ids -> tensor<f32>, !vec
    mega.output "loss", %loss : tensor<f32>
    mega.output "logits", %logits : !act
    return
  }
}
