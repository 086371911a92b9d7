//! The key mapping: where each parameter of the network lives in the reference's state dict.
//! This file is the only place that knows PyTorch's names (`bn1.0.weight`, `final.6.weight`, ...).

use std::collections::HashSet;

use burn::module::{Param, RunningState};
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor, TensorData};

use super::{TensorSource, WeightsError};
use crate::model::aspp::Aspp;
use crate::model::layers::ConvBnRelu;
use crate::model::trunk::IdentityResidualBlock;
use crate::model::RplNetwork;

/// One state-dict entry the network expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamEntry {
    pub key: String,
    pub shape: Vec<usize>,
}

/// Something done to every parameter and running statistic, by state-dict key.
trait ParamVisitor {
    fn param<const D: usize>(&mut self, key: String, param: &mut Param<Tensor<D>>);
    fn running(&mut self, key: String, state: &mut RunningState<Tensor<1>>);
}

impl ParamEntry {
    /// The entry's size in float32.
    pub fn float32_bytes(&self) -> u64 {
        self.shape.iter().product::<usize>() as u64 * 4
    }
}

/// Every entry of the network's state dict, in module order, without allocating its weights.
pub fn expected_entries(network: &mut RplNetwork) -> Vec<ParamEntry> {
    let mut lister = ShapeLister::default();
    visit_network(network, &mut lister);
    lister.entries
}

/// Replaces the parameters named in `keys` by the checkpoint's tensors (shapes already checked),
/// showing each tensor's values to `on_values` before they go to the device.
pub(crate) fn fill_entries(
    network: &mut RplNetwork,
    source: &dyn TensorSource,
    device: &Device,
    keys: &HashSet<&str>,
    on_values: &mut dyn FnMut(&str, &[f32]),
) -> Result<(), WeightsError> {
    let mut loader = Loader { source, device, keys, on_values, error: None };
    visit_network(network, &mut loader);
    loader.error.map_or(Ok(()), Err)
}

/// Every entry's key, shape and values, read from the network (to save what was trained).
pub(crate) fn read_network(network: &RplNetwork) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut reader = ValueReader::default();
    commit_running_statistics(network);
    // The visitor takes `&mut` for loading; reading works on a copy (parameters are shared handles).
    visit_network(&mut network.clone(), &mut reader);
    reader.entries
}

/// Commits every BatchNorm's pending running-statistics update: burn applies a training step's
/// update lazily, and a checkpoint written before the next step would miss it.
pub(crate) fn commit_running_statistics(network: &RplNetwork) {
    struct Committer;
    impl ParamVisitor for Committer {
        fn param<const D: usize>(&mut self, _key: String, _param: &mut Param<Tensor<D>>) {}

        fn running(&mut self, _key: String, state: &mut RunningState<Tensor<1>>) {
            state.value_sync();
        }
    }
    // Running statistics are shared handles: committing on a copy commits on the network.
    visit_network(&mut network.clone(), &mut Committer);
}

#[derive(Default)]
struct ValueReader {
    entries: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl ValueReader {
    fn push<const D: usize>(&mut self, key: String, tensor: Tensor<D>) {
        let shape = tensor.dims().to_vec();
        let values = tensor.into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default();
        self.entries.push((key, shape, values));
    }
}

impl ParamVisitor for ValueReader {
    fn param<const D: usize>(&mut self, key: String, param: &mut Param<Tensor<D>>) {
        self.push(key, param.val());
    }

    fn running(&mut self, key: String, state: &mut RunningState<Tensor<1>>) {
        self.push(key, state.value());
    }
}

#[derive(Default)]
struct ShapeLister {
    entries: Vec<ParamEntry>,
}

impl ParamVisitor for ShapeLister {
    fn param<const D: usize>(&mut self, key: String, param: &mut Param<Tensor<D>>) {
        self.entries.push(ParamEntry { key, shape: param.lazy_shape().to_vec() });
    }

    fn running(&mut self, key: String, state: &mut RunningState<Tensor<1>>) {
        self.entries.push(ParamEntry { key, shape: state.value().dims().to_vec() });
    }
}

struct Loader<'a> {
    source: &'a dyn TensorSource,
    device: &'a Device,
    /// The entries this pass fills; the others are left as they are.
    keys: &'a HashSet<&'a str>,
    on_values: &'a mut dyn FnMut(&str, &[f32]),
    /// The first failure; later entries are skipped.
    error: Option<WeightsError>,
}

impl Loader<'_> {
    fn tensor<const D: usize>(&mut self, key: &str, shape: [usize; D]) -> Option<Tensor<D>> {
        if self.error.is_some() || !self.keys.contains(key) {
            return None;
        }
        match self.source.read_f32(key).and_then(|values| all_finite(self.source, key, values)) {
            Ok(values) => {
                (self.on_values)(key, &values);
                Some(Tensor::from_data(TensorData::new(values, shape), self.device))
            }
            Err(error) => {
                self.error = Some(error);
                None
            }
        }
    }
}

/// NaN or infinite weights would turn every output into NaN: refused by name at load time.
fn all_finite(source: &dyn TensorSource, key: &str, values: Vec<f32>) -> Result<Vec<f32>, WeightsError> {
    let bad = values.iter().filter(|v| !v.is_finite()).count();
    if bad == 0 {
        return Ok(values);
    }
    Err(WeightsError::NonFinite { origin: source.origin().to_string(), key: key.to_string(), count: bad, total: values.len() })
}

impl ParamVisitor for Loader<'_> {
    fn param<const D: usize>(&mut self, key: String, param: &mut Param<Tensor<D>>) {
        let shape: [usize; D] = param.lazy_shape().dims();
        if let Some(tensor) = self.tensor(&key, shape) {
            *param = Param::from_tensor(tensor);
        }
    }

    fn running(&mut self, key: String, state: &mut RunningState<Tensor<1>>) {
        let shape: [usize; 1] = state.value().dims();
        if let Some(tensor) = self.tensor(&key, shape) {
            *state = RunningState::new(tensor);
        }
    }
}

fn visit_network(net: &mut RplNetwork, v: &mut impl ParamVisitor) {
    let p = "branch1";
    conv(v, format!("{p}.mod1.conv1"), &mut net.trunk.mod1);
    for (s, stage) in net.trunk.stages.iter_mut().enumerate() {
        for (b, block) in stage.blocks.iter_mut().enumerate() {
            residual_block(v, format!("{p}.mod{}.block{}", s + 2, b + 1), block);
        }
    }
    let rb = &mut net.residual_block;
    aspp(v, format!("{p}.residual_block.atten_aspp"), &mut rb.atten_aspp);
    conv(v, format!("{p}.residual_block.bot_atten_aspp"), &mut rb.bot_atten_aspp);
    conv(v, format!("{p}.residual_block.atten_aspp_final"), &mut rb.atten_aspp_final);
    conv(v, format!("{p}.residual_block.proj_head.proj.0"), &mut rb.proj_head);
    aspp(v, format!("{p}.aspp"), &mut net.aspp);
    conv(v, format!("{p}.bot_fine"), &mut net.bot_fine);
    conv(v, format!("{p}.bot_aspp"), &mut net.bot_aspp);
    // `final` is a Sequential: conv, BN, ReLU, conv, BN, ReLU, conv.
    conv_bn_relu(v, format!("{p}.final.0"), format!("{p}.final.1"), &mut net.head.block1);
    conv_bn_relu(v, format!("{p}.final.3"), format!("{p}.final.4"), &mut net.head.block2);
    conv(v, format!("{p}.final.6"), &mut net.head.classifier);
}

fn residual_block(v: &mut impl ParamVisitor, p: String, block: &mut IdentityResidualBlock) {
    batch_norm(v, format!("{p}.bn1.0"), &mut block.bn1);
    conv(v, format!("{p}.convs.conv1"), &mut block.conv1);
    unless_folded(v, format!("{p}.convs.bn2.0"), &mut block.bn2);
    conv(v, format!("{p}.convs.conv2"), &mut block.conv2);
    unless_folded(v, format!("{p}.convs.bn3.0"), &mut block.bn3);
    if let Some(conv3) = &mut block.conv3 {
        conv(v, format!("{p}.convs.conv3"), conv3);
    }
    if let Some(proj) = &mut block.proj_conv {
        conv(v, format!("{p}.proj_conv"), proj);
    }
}

fn aspp(v: &mut impl ParamVisitor, p: String, aspp: &mut Aspp) {
    for (i, branch) in aspp.features.iter_mut().enumerate() {
        conv_bn_relu(v, format!("{p}.features.{i}.0"), format!("{p}.features.{i}.1"), branch);
    }
    conv_bn_relu(v, format!("{p}.img_conv.0"), format!("{p}.img_conv.1"), &mut aspp.img_conv);
}

fn conv_bn_relu(v: &mut impl ParamVisitor, conv_key: String, bn_key: String, layer: &mut ConvBnRelu) {
    conv(v, conv_key, &mut layer.conv);
    unless_folded(v, bn_key, &mut layer.bn);
}

fn conv(v: &mut impl ParamVisitor, p: String, conv: &mut Conv2d) {
    v.param(format!("{p}.weight"), &mut conv.weight);
    if let Some(bias) = &mut conv.bias {
        v.param(format!("{p}.bias"), bias);
    }
}

/// A BatchNorm that follows a convolution: absent once folded into it (or, for `bn3`, in a
/// two-convolution block).
fn unless_folded(v: &mut impl ParamVisitor, p: String, bn: &mut Option<BatchNorm>) {
    if let Some(bn) = bn {
        batch_norm(v, p, bn);
    }
}

fn batch_norm(v: &mut impl ParamVisitor, p: String, bn: &mut BatchNorm) {
    v.param(format!("{p}.weight"), &mut bn.gamma);
    v.param(format!("{p}.bias"), &mut bn.beta);
    v.running(format!("{p}.running_mean"), &mut bn.running_mean);
    v.running(format!("{p}.running_var"), &mut bn.running_var);
}
