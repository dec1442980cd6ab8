"""Regeneration at the receiver, and the models that judge and rival it.

* :mod:`genscom.generation.diffusion`: the conditional diffusion decoder (diffusers ``UNet2DConditionModel``,
  needs the ``[gen]`` extra) that draws a frame from a received embedding; the shipped ones are
  ``regen-mini-attr`` (on ``mini-attr``) and ``regen-mini-attr-v2`` .. ``-v5`` (on ``mini-attr-v2``;
  ``genscom/adapters``), used by the ``regen`` scheme (:mod:`genscom.schemes.regen`);
* :mod:`genscom.generation.rerank`: best-of-N regeneration (the receiver keeps, of N drawings, the one its
  own image tower finds closest to what it received);
* :mod:`genscom.generation.train`: ``genscom train decoder``;
* :mod:`genscom.generation.deepjscc`: the pixel DeepJSCC peer (``deepjscc`` scheme);
* :mod:`genscom.generation.attributes`: the attribute classifier that scores regenerated frames;
* :mod:`genscom.generation.recipes`: ``genscom train deepjscc`` and ``genscom train classifier``.

Importing this package imports neither diffusers nor the submodules.
"""
