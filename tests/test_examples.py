"""PyTorch's example models, written as their scripts write them (torch.nn layers and
torch.nn.functional in ``forward``), converted with ``gpudnn.nn.convert`` as a new user would and
trained a few steps: losses and parameters equal the pure torch run, and the report shows the
expected fusions.

Compact versions of pytorch/examples' MNIST CNN, DCGAN, word-level LSTM language model, VAE and
forward-forward, plus an RNN (GRU) classifier and a small Transformer language model. Each
``run_*`` function is the example's script: build, convert (``use_gpudnn``; the optimizer built
before ``convert`` where the example builds it before, after where it comes later), train.
Outside ``forward`` the gpudnn run uses what the README tells a user to switch to: the losses of
``gpudnn.nn`` and the functions of ``gpudnn.functional`` (``import gpudnn.nn as nn``). Dropout has
p=0 here: gpudnn's dropout masks come from its own Philox stream, not torch's (by design).
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

import gpudnn
import gpudnn.functional as GF
import gpudnn.nn as gnn
from gpudnn.testing import assert_close

F64 = torch.float64


def _nn(use_gpudnn):
    """Where the training loop takes its loss modules from."""
    return gnn if use_gpudnn else nn


def _f(name, use_gpudnn):
    """A loss function for the training loop: gpudnn.functional's when it has it."""
    return getattr(GF, name) if use_gpudnn and hasattr(GF, name) else getattr(F, name)


def _convert(model, use_gpudnn, reports):
    if use_gpudnn:
        model, report = gnn.convert(model, report=True)  # in place: the same object
        reports.append(report)
    return model


def _compare(run, steps=3, dtype=F64, backend="reference", device="cpu", scale=1.0):
    """Run the example in torch and converted; the losses and every parameter and buffer agree."""
    want = run(False, steps, dtype, device)
    with gpudnn.use_backend(backend):
        got = run(True, steps, dtype, device)
    assert len(got["losses"]) == len(want["losses"]) == steps
    for step, (a, b) in enumerate(zip(got["losses"], want["losses"])):
        assert_close(torch.stack(a), torch.stack(b), dtype, name=f"losses of step {step}",
                     scale=scale)
    for ours, theirs in zip(got["models"], want["models"]):
        ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
        assert list(ours_state) == list(theirs_state)
        for key, value in theirs_state.items():
            assert_close(ours_state[key], value, dtype, name=key, scale=scale)
    return got


def _fused(report):
    return sorted(report.fused)


def _step(optimizer, loss):
    """The scripts' step: zero the gradients, backward, step; the loss for the comparison."""
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return [loss.detach()]


# --- MNIST CNN (pytorch/examples mnist/main.py) --------------------------------------------------

class MnistNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, 1)
        self.conv2 = nn.Conv2d(4, 6, 3, 1)
        self.dropout1 = nn.Dropout(0.0)
        self.dropout2 = nn.Dropout(0.0)
        self.fc1 = nn.Linear(6 * 4 * 4, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        output = F.log_softmax(x, dim=1)
        return output


def run_mnist(use_gpudnn, steps, dtype, device="cpu"):
    torch.manual_seed(0)
    data = torch.randn(steps, 6, 1, 12, 12, dtype=dtype, device=device)
    target = torch.randint(0, 10, (steps, 6), device=device)
    model = MnistNet().to(device=device, dtype=dtype)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)  # before convert, as the script
    reports = []
    model = _convert(model, use_gpudnn, reports)
    model.train()
    losses = []
    for step in range(steps):
        output = model(data[step])
        losses.append(_step(optimizer, _f("nll_loss", use_gpudnn)(output, target[step])))
    return {"losses": losses, "models": [model], "reports": reports}


def test_mnist_cnn_trains_like_torch():
    got = _compare(run_mnist)
    (report,) = got["reports"]
    assert _fused(report) == ["conv1 + F.relu", "conv2 + F.relu", "fc1 + F.relu"]
    assert sorted(report.functional) == ["F.log_softmax", "F.max_pool2d"]
    assert report.rewritten == ["MnistNet"] and report.left == []


# --- DCGAN (pytorch/examples dcgan/main.py) -------------------------------------------------------

NZ, NGF, NDF, NC = 4, 4, 4, 1


def weights_init(m):
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        torch.nn.init.normal_(m.weight, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        torch.nn.init.normal_(m.weight, 1.0, 0.02)
        torch.nn.init.zeros_(m.bias)


class Generator(nn.Module):
    def __init__(self, ngpu=1):
        super().__init__()
        self.ngpu = ngpu
        self.main = nn.Sequential(
            nn.ConvTranspose2d(NZ, NGF * 2, 4, 1, 0, bias=False),
            nn.BatchNorm2d(NGF * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(NGF * 2, NGF, 4, 2, 1, bias=False),
            nn.BatchNorm2d(NGF),
            nn.ReLU(True),
            nn.ConvTranspose2d(NGF, NC, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, input):
        if input.is_cuda and self.ngpu > 1:
            output = nn.parallel.data_parallel(self.main, input, range(self.ngpu))
        else:
            output = self.main(input)
        return output


class Discriminator(nn.Module):
    def __init__(self, ngpu=1):
        super().__init__()
        self.ngpu = ngpu
        self.main = nn.Sequential(
            nn.Conv2d(NC, NDF, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF, NDF * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(NDF * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF * 2, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, input):
        if input.is_cuda and self.ngpu > 1:
            output = nn.parallel.data_parallel(self.main, input, range(self.ngpu))
        else:
            output = self.main(input)
        return output.view(-1, 1).squeeze(1)


def run_dcgan(use_gpudnn, steps, dtype, device="cpu"):
    torch.manual_seed(0)
    reports = []
    netG = Generator().to(dtype=dtype)
    netG.apply(weights_init)
    netG = _convert(netG, use_gpudnn, reports)
    netD = Discriminator().to(dtype=dtype)
    netD.apply(weights_init)
    netD = _convert(netD, use_gpudnn, reports)
    criterion = _nn(use_gpudnn).BCELoss()
    optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real = torch.rand(steps, 4, NC, 16, 16, dtype=dtype) * 2 - 1
    losses = []
    for step in range(steps):
        netD.zero_grad()
        batch_size = real[step].size(0)
        label = torch.full((batch_size,), 1.0, dtype=dtype)
        output = netD(real[step])
        errD_real = criterion(output, label)
        errD_real.backward()
        noise = torch.randn(batch_size, NZ, 1, 1, dtype=dtype)
        fake = netG(noise)
        label.fill_(0.0)
        output = netD(fake.detach())
        errD_fake = criterion(output, label)
        errD_fake.backward()
        optimizerD.step()
        netG.zero_grad()
        label.fill_(1.0)
        output = netD(fake)
        errG = criterion(output, label)
        errG.backward()
        optimizerG.step()
        losses.append([(errD_real + errD_fake).detach(), errG.detach()])
    return {"losses": losses, "models": [netG, netD], "reports": reports}


def test_dcgan_trains_like_torch():
    got = _compare(run_dcgan)
    report_g, report_d = got["reports"]
    assert _fused(report_g) == ["main.1 + main.2 (ReLU)", "main.4 + main.5 (ReLU)",
                                "main.6 + main.7 (Tanh)"]
    assert _fused(report_d) == ["main.0 + main.1 (LeakyReLU)", "main.3 + main.4 (LeakyReLU)",
                                "main.5 + main.6 (Sigmoid)"]
    # `if input.is_cuda and self.ngpu > 1` cannot be traced: said, and the Sequential still fused
    (what, why), = report_g.left
    assert what == "Generator.forward" and why.startswith("not traced: TraceError")


# --- word-level language model (pytorch/examples word_language_model) -----------------------------

class RNNModel(nn.Module):
    def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.0):
        super().__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        self.rnn_type, self.nhid, self.nlayers = rnn_type, nhid, nlayers

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output)
        decoded = decoded.view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        return (weight.new_zeros(self.nlayers, bsz, self.nhid),
                weight.new_zeros(self.nlayers, bsz, self.nhid))


def repackage_hidden(h):
    if isinstance(h, torch.Tensor):
        return h.detach()
    return tuple(repackage_hidden(v) for v in h)


def run_word_lm(use_gpudnn, steps, dtype, device="cpu", bptt=5, lr=20.0):
    torch.manual_seed(0)
    ntokens, batch_size = 12, 3
    source = torch.randint(0, ntokens, (bptt * steps + 1, batch_size))
    reports = []
    model = RNNModel("LSTM", ntokens, 6, 8, 2).to(dtype=dtype)
    model = _convert(model, use_gpudnn, reports)
    criterion = _nn(use_gpudnn).NLLLoss()
    model.train()
    hidden = model.init_hidden(batch_size)
    losses = []
    for i in range(0, bptt * steps, bptt):
        data, targets = source[i:i + bptt], source[i + 1:i + 1 + bptt].reshape(-1)
        model.zero_grad()
        hidden = repackage_hidden(hidden)
        output, hidden = model(data, hidden)
        loss = criterion(output, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        for p in model.parameters():  # the script's own SGD
            p.data.add_(p.grad, alpha=-lr)
        losses.append([loss.detach()])
    return {"losses": losses, "models": [model], "reports": reports}


def test_word_language_model_trains_like_torch():
    got = _compare(run_word_lm)
    (report,) = got["reports"]
    assert {"encoder (Embedding)", "rnn (LSTM)", "decoder (Linear)"} <= set(report.converted)
    assert report.functional == ["F.log_softmax"] and report.left == []


# --- VAE (pytorch/examples vae/main.py) -----------------------------------------------------------

class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(36, 12)
        self.fc21 = nn.Linear(12, 4)
        self.fc22 = nn.Linear(12, 4)
        self.fc3 = nn.Linear(4, 12)
        self.fc4 = nn.Linear(12, 36)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 36))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def vae_loss(recon_x, x, mu, logvar, use_gpudnn):
    BCE = _f("binary_cross_entropy", use_gpudnn)(recon_x, x.view(-1, 36), reduction="sum")
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return BCE + KLD


def run_vae(use_gpudnn, steps, dtype, device="cpu"):
    torch.manual_seed(0)
    data = torch.rand(steps, 5, 1, 6, 6, dtype=dtype, device=device)
    model = VAE().to(device=device, dtype=dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)  # before convert, as the script
    reports = []
    model = _convert(model, use_gpudnn, reports)
    model.train()
    losses = []
    for step in range(steps):
        recon_batch, mu, logvar = model(data[step])
        losses.append(_step(optimizer, vae_loss(recon_batch, data[step], mu, logvar, use_gpudnn)))
    model.eval()
    with torch.no_grad():  # the script's sampling calls decode directly
        sample = model.decode(torch.randn(4, 4, dtype=dtype, device=device))
    return {"losses": losses, "models": [model], "reports": reports, "sample": sample}


def test_vae_trains_like_torch_and_decode_is_unchanged():
    got = _compare(run_vae)
    (report,) = got["reports"]
    assert _fused(report) == ["fc1 + F.relu", "fc3 + F.relu", "fc4 + torch.sigmoid"]
    # the fusion is the rewritten forward's: decode() called by itself is the plain code
    want = run_vae(False, 3, F64)["sample"]
    assert_close(got["sample"], want, F64, name="decode() sample")
    assert all(m.activation is None for m in got["models"][0].children())


def test_vae_trains_like_torch_on_triton(device):
    _compare(run_vae, steps=2, dtype=torch.float32, backend="triton", device=device, scale=4.0)


# --- an RNN classifier (GRU) ----------------------------------------------------------------------

class RNNClassifier(nn.Module):
    def __init__(self, input_size=5, hidden_size=8, num_classes=3):
        super().__init__()
        self.rnn = nn.GRU(input_size, hidden_size, batch_first=True)
        self.fc1 = nn.Linear(hidden_size, hidden_size)
        self.fc2 = nn.Linear(hidden_size, num_classes)

    def forward(self, x):
        _, h = self.rnn(x)
        return self.fc2(F.relu(self.fc1(h[-1])))


def run_rnn_classifier(use_gpudnn, steps, dtype, device="cpu"):
    torch.manual_seed(0)
    x = torch.randn(steps, 4, 6, 5, dtype=dtype)
    y = torch.randint(0, 3, (steps, 4))
    reports = []
    model = _convert(RNNClassifier().to(dtype=dtype), use_gpudnn, reports)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)  # after convert
    losses = []
    for step in range(steps):
        loss = _f("cross_entropy", use_gpudnn)(model(x[step]), y[step])
        losses.append(_step(optimizer, loss))
    return {"losses": losses, "models": [model], "reports": reports}


def test_rnn_classifier_trains_like_torch():
    got = _compare(run_rnn_classifier)
    (report,) = got["reports"]
    assert "rnn (GRU)" in report.converted and _fused(report) == ["fc1 + F.relu"]


# --- a small Transformer language model (GPT-style block) -----------------------------------------

class Block(nn.Module):
    def __init__(self, d_model, n_head):
        super().__init__()
        self.n_head, self.scale = n_head, (d_model // n_head) ** -0.5
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.out = nn.Linear(4 * d_model, d_model)

    def forward(self, x, mask):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * self.scale
        att = att.masked_fill(mask[:T, :T] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TransformerLM(nn.Module):
    def __init__(self, vocab_size=11, d_model=8, n_head=2, n_layer=2, block_size=6):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(block_size, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        self.register_buffer("mask", torch.tril(torch.ones(block_size, block_size)))

    def forward(self, idx):
        B, T = idx.shape
        x = self.tok(idx) + self.pos(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x, self.mask)
        return self.head(self.ln_f(x))


def run_transformer_lm(use_gpudnn, steps, dtype, device="cpu"):
    torch.manual_seed(0)
    tokens = torch.randint(0, 11, (steps, 3, 7))
    reports = []
    model = _convert(TransformerLM().to(dtype=dtype), use_gpudnn, reports)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)  # after convert
    losses = []
    for step in range(steps):
        idx, targets = tokens[step, :, :-1], tokens[step, :, 1:]
        logits = model(idx)
        loss = _f("cross_entropy", use_gpudnn)(logits.reshape(-1, logits.size(-1)),
                                               targets.reshape(-1))
        losses.append(_step(optimizer, loss))
    return {"losses": losses, "models": [model], "reports": reports}


def test_transformer_lm_trains_like_torch():
    got = _compare(run_transformer_lm)
    (report,) = got["reports"]
    assert _fused(report) == ["blocks.0.fc + F.gelu", "blocks.1.fc + F.gelu"]
    assert report.functional == ["F.softmax", "F.softmax"]
    assert {"ln_f (LayerNorm)", "tok (Embedding)", "blocks.0.ln1 (LayerNorm)"} <= \
        set(report.converted)


# --- forward-forward (pytorch/examples mnist_forward_forward), a Linear stack ---------------------

class FFNet(nn.Module):
    def __init__(self, dims=(10, 12, 12)):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:]))

    def forward(self, x):
        goodness = []
        for layer in self.layers:
            x = x / (x.norm(2, 1, keepdim=True) + 1e-4)
            x = F.relu(layer(x))
            goodness.append(x.pow(2).mean(1))
            x = x.detach()  # each layer learns from its own goodness
        return goodness


def ff_loss(g_pos, g_neg, threshold=2.0):
    return torch.log(1 + torch.exp(torch.cat([-g_pos + threshold, g_neg - threshold]))).mean()


def run_forward_forward(use_gpudnn, steps, dtype, device="cpu"):
    torch.manual_seed(0)
    x_pos = torch.randn(steps, 6, 10, dtype=dtype, device=device)
    x_neg = torch.randn(steps, 6, 10, dtype=dtype, device=device)
    model = FFNet().to(device=device, dtype=dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)  # before convert
    reports = []
    model = _convert(model, use_gpudnn, reports)
    losses = []
    for step in range(steps):
        loss = sum(ff_loss(p, n) for p, n in zip(model(x_pos[step]), model(x_neg[step])))
        losses.append(_step(optimizer, loss))
    return {"losses": losses, "models": [model], "reports": reports}


def test_forward_forward_trains_like_torch():
    got = _compare(run_forward_forward)
    (report,) = got["reports"]
    assert _fused(report) == ["layers.0 + F.relu", "layers.1 + F.relu"]


def test_forward_forward_trains_like_torch_on_triton(device):
    _compare(run_forward_forward, steps=2, dtype=torch.float32, backend="triton", device=device,
             scale=4.0)


def test_examples_converted_twice_or_copied_behave_the_same():
    """convert is idempotent, and inplace=False converts a copy that trains alike."""
    torch.manual_seed(0)
    model = MnistNet().double()
    reference = copy.deepcopy(model)
    copied = gnn.convert(model, inplace=False)
    assert type(model.conv1) is nn.Conv2d and type(model) is MnistNet
    again, report = gnn.convert(gnn.convert(copied), report=True)
    assert again is copied and _fused(report) == ["conv1 + F.relu", "conv2 + F.relu",
                                                  "fc1 + F.relu"]
    x = torch.randn(2, 1, 12, 12, dtype=F64)
    with gpudnn.use_backend("reference"):
        assert_close(again(x), reference(x), F64, name="converted twice")
