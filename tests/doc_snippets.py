"""The code in the Markdown docs: fenced blocks, inline code spans, and the
`python -m MODULE ...` commands in them, each with its file and line."""

import dataclasses
import glob
import os
import re
import shlex
import tomllib
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHELL_LANGS = ('', 'bash', 'sh', 'shell', 'console')


def doc_files() -> list[str]:
  """The docs a user reads, relative to the repository root."""
  paths = [p for p in ('README.md', 'BENCHMARKS.md') if os.path.exists(os.path.join(REPO, p))]
  return paths + sorted(os.path.relpath(p, REPO)
                        for p in glob.glob(os.path.join(REPO, 'docs', '*.md')))


def console_scripts() -> dict[str, str]:
  """Commands pyproject.toml installs (`[project.scripts]`), name -> module."""
  with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    scripts = tomllib.load(f).get('project', {}).get('scripts', {})
  return {name: target.split(':')[0] for name, target in scripts.items()}


@dataclasses.dataclass(frozen=True)
class Snippet:
  """A shell line of a fenced block (continuations joined), a whole block of
  another language, or an inline code span (lang None)."""
  doc: str
  line: int
  text: str
  lang: Optional[str]

  @property
  def where(self) -> str:
    return f'{self.doc}:{self.line}'


@dataclasses.dataclass(frozen=True)
class Command:
  """`python -m module args...` (or an installed command of `module`); `args`
  as the shell splits them, with the bracketed optional parts
  (`[--flag=...]`) and comments left out."""
  module: str
  args: tuple[str, ...]
  snippet: Snippet
  written: str  # `python -m MODULE`, or the installed command's name

  @property
  def text(self) -> str:
    return ' '.join((self.written,) + self.args)


def read(doc: str) -> str:
  with open(os.path.join(REPO, doc)) as f:
    return f.read()


def snippets(doc: str, text: Optional[str] = None) -> list[Snippet]:
  """Every fenced block and inline code span of `doc` (or of `text`, named `doc`)."""
  lines = (read(doc) if text is None else text).split('\n')
  out, prose, fence = [], [], None  # fence: (lang, first line, lines)
  for number, line in enumerate(lines, 1):
    if line.lstrip().startswith('```'):
      if fence is None:
        out += _inline_spans(doc, prose)
        prose, fence = [], (line.strip()[3:].strip(), number + 1, [])
      else:
        out += _block(doc, *fence)
        fence = None
    elif fence is not None:
      fence[2].append(line)
    else:
      prose.append((number, line))
  return out + _inline_spans(doc, prose)


def _block(doc: str, lang: str, first: int, lines: list[str]) -> list[Snippet]:
  if lang not in SHELL_LANGS:
    return [Snippet(doc, first, '\n'.join(lines), lang)]
  out, start, joined = [], None, ''
  for number, line in enumerate(lines, first):
    start = number if start is None else start
    if line.rstrip().endswith('\\'):
      joined += line.rstrip()[:-1] + ' '
      continue
    if (joined + line).strip():
      out.append(Snippet(doc, start, (joined + line).strip(), lang))
    start, joined = None, ''
  return out


def _inline_spans(doc: str, prose: list[tuple[int, str]]) -> list[Snippet]:
  """Inline code spans, found paragraph by paragraph (a span may wrap lines)."""
  out, paragraph = [], []
  for number, line in prose + [(None, '')]:
    if line.strip():
      paragraph.append((number, line))
      continue
    if paragraph:
      text = '\n'.join(l for _, l in paragraph)
      for match in re.finditer(r'`([^`]+)`', text):
        line_number = paragraph[0][0] + text[:match.start()].count('\n')
        out.append(Snippet(doc, line_number, ' '.join(match.group(1).split()), None))
    paragraph = []
  return out


def command_pattern() -> str:
  """`python -m MODULE` or an installed command, at the start of a word."""
  scripts = '|'.join(re.escape(name) for name in console_scripts())
  installed = f'|({scripts})(?![\\w-])' if scripts else ''
  return r'(?<![\w./-])(?:python3? -m ([\w.]+)' + installed + ')'


def commands(snippet: Snippet) -> list[Command]:
  """The commands of our modules (`python -m MODULE ...`, installed commands)
  in a shell snippet or inline span.

  Raises:
    ValueError: the shell cannot split the command (unbalanced quotes).
  """
  if snippet.lang not in SHELL_LANGS + (None,):
    return []
  text = ' '.join(snippet.text.split())
  starts = list(re.finditer(command_pattern(), text))
  scripts = console_scripts()
  out = []
  for match, end in zip(starts, [m.start() for m in starts[1:]] + [len(text)]):
    args = re.split(r'\s(?:&&|\|\||;|\|)\s', text[match.end():end])[0]
    # Optional parts are shown bracketed: `[--gin_file=...]`, `[--tasks=a,b]`.
    args = re.sub(r'\[--[^\]]*\]', ' ', args)
    module = match.group(1) or scripts[match.group(2)]
    out.append(Command(module, tuple(shlex.split(args, comments=True)), snippet,
                       match.group(0)))
  return out


def module_files(found: list[Snippet]) -> dict[str, str]:
  """Python blocks that start with `# NAME.py`: the modules the docs define."""
  out = {}
  for snippet in found:
    match = re.match(r'#\s*(\w+)\.py\s*\n', snippet.text)
    if snippet.lang == 'python' and match:
      out[match.group(1)] = snippet.text
  return out


def section_lines(doc: str, heading: str) -> range:
  """The lines of the section whose heading reads `heading` (to the next
  heading of the same or a higher level)."""
  lines = read(doc).split('\n')
  for start, line in enumerate(lines, 1):
    match = re.match(r'(#+)\s+(.*)', line)
    if match and match.group(2).strip() == heading:
      level = len(match.group(1))
      end = len(lines) + 1
      in_fence = False
      for number in range(start + 1, len(lines) + 1):
        text = lines[number - 1]
        in_fence ^= text.lstrip().startswith('```')
        other = re.match(r'(#+)\s', text)
        if not in_fence and other and len(other.group(1)) <= level:
          end = number
          break
      return range(start, end)
  raise ValueError(f'{doc}: no section {heading!r}')
