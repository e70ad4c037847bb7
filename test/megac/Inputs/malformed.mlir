// A model with an op the dialect does not have (used by errors.test).
module {
  func.func @gpt() {
    // the error points here:
    %x = mega.bogus_op
  }
}
