"""PyTorch port of the PINN, with forward parity to the TensorFlow model.

Modules (none imports TensorFlow at import time):

    ops          translation, layout transforms, pad_and_diffract (twins of ptycho.tf_helper)
    reassembly   extraction, reassembly, global stitching (twins of ptycho.tf_reassembly)
    model        PtychoPINN (torch.nn.Module): the layers of ptycho.model, same order and names
    weights      Keras <-> torch weight transfer (tf_to_torch, torch_to_tf)
    optim        Keras' Adam arithmetic, EarlyStopping and ReduceLROnPlateau rules
    training     train(model, data, spec, callbacks) with the TF history names
    inference    predict_patches, stitch_patches
    workflow     run_phase_job, the twin of ptycho.workflow.run_phase_job

Tensors keep TensorFlow's layouts (B, N, N, C) and (B, 1, 2, C); see ``ptycho``'s glossary.
The spec dataclasses (ModelSpec, TrainSpec, GroupingSpec) and JobResult are the TF side's,
read by field; ``workflow.run_phase_job`` imports ptycho.workflow and ptycho.inference
(TensorFlow modules today) when a job runs, for JobResult and the numpy stitching
bookkeeping. Training, inference and stitching arithmetic run in torch.
"""
