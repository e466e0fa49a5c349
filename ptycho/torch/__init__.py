"""PyTorch port of the PINN, with forward parity to the TensorFlow model.

Modules (none imports TensorFlow at import time):

    ops          translation, layout transforms, pad_and_diffract (twins of ptycho.tf.ops)
    reassembly   extraction, reassembly, the stitching's window sums (twins of ptycho.tf.reassembly)
    model        PtychoPINN (torch.nn.Module): the layers of ptycho.tf.model, same order and names
    weights      Keras <-> torch weight transfer (tf_to_torch, torch_to_tf)
    optim        Keras' Adam arithmetic, EarlyStopping and ReduceLROnPlateau rules
    training     train(model, data, spec, callbacks) with the TF history names
    inference    predict_patches, stitch_patches
    workflow     run_phase_job: ptycho.pipeline on this backend

Tensors keep TensorFlow's layouts (B, N, N, C) and (B, 1, 2, C); see ``ptycho``'s glossary.
What does not depend on the framework is shared with the TensorFlow side and imports
neither framework: the specs and JobResult (ptycho.spec), the architecture and initial
weights (ptycho.architecture), grouped data and batch order (ptycho.data.batches), the stitching
bookkeeping (ptycho.stitching) and the job's steps (ptycho.pipeline). A PyTorch job never
imports TensorFlow.
"""
