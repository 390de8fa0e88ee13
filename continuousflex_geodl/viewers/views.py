"""Scipion ``View`` objects of our viewers: a figure or an animation in a Tk window.

``FigureView(fig)`` shows a matplotlib Figure (made with ``plotting``) in a
Tk window with the matplotlib toolbar (zoom, pan, save); ``save(path)``
writes it as PNG without any display.  ``AnimationView(gif)`` plays an
animated GIF in a Tk window.  ``ExplorerView(explorer)`` opens the
interactive landscape explorer (``core.landscape.explore``) in a Tk window.
They only need a display when ``show()`` is called.
"""
import os

from pyworkflow.viewer import View

from ..core.fileio import atomic_copy


def _toplevel(title, parent=None):
    import tkinter as tk
    master = parent if parent is not None else getattr(tk, '_default_root', None)
    win = tk.Toplevel(master) if master is not None else tk.Tk()
    win.title(title)
    return win


class _WindowView(View):
    """A view shown in its own Tk window titled ``title`` (child of ``tkParent``)."""

    def __init__(self, title, tkParent=None):
        View.__init__(self)
        self.title = title
        self._tkParent = tkParent

    def _figureWindow(self, figure):
        """(window, canvas): ``figure`` in a new window, with the matplotlib toolbar."""
        from matplotlib.backends.backend_tkagg import FigureCanvasTkAgg, NavigationToolbar2Tk
        win = _toplevel(self.title, self._tkParent)
        canvas = FigureCanvasTkAgg(figure, master=win)
        NavigationToolbar2Tk(canvas, win).update()
        canvas.get_tk_widget().pack(side='top', fill='both', expand=True)
        return win, canvas


class FigureView(_WindowView):
    """A matplotlib Figure shown in its own Tk window."""

    def __init__(self, figure, title='continuousflex_geodl', tkParent=None):
        _WindowView.__init__(self, title, tkParent)
        self.figure = figure

    def save(self, path):
        """Write the figure as PNG (atomic; works headless); returns ``path``."""
        from ..core.landscape.plots import save_figure
        return save_figure(self.figure, path)

    def show(self):
        _, canvas = self._figureWindow(self.figure)
        canvas.draw()


class AnimationView(_WindowView):
    """An animated GIF played in a Tk window (loops until closed)."""

    def __init__(self, gif, title='pathway animation', tkParent=None):
        _WindowView.__init__(self, title, tkParent)
        self.gif = gif

    def save(self, path):
        """Copy the GIF to ``path``; returns ``path``."""
        if os.path.abspath(path) != os.path.abspath(self.gif):
            atomic_copy(self.gif, path, link=False)
        return path

    def show(self):
        import tkinter as tk
        from PIL import Image, ImageSequence, ImageTk
        win = _toplevel(self.title, self._tkParent)
        with Image.open(self.gif) as im:
            delays = []
            frames = []
            for f in ImageSequence.Iterator(im):
                frames.append(ImageTk.PhotoImage(f.convert('RGB'), master=win))
                delays.append(max(int(f.info.get('duration', 120)), 20))
        label = tk.Label(win, image=frames[0])
        label.pack()
        tk.Label(win, text=os.path.basename(self.gif) + ': three orthogonal views '
                 '(front, side, top), one frame per point of the path').pack()
        state = {'i': 0}
        win._frames = frames  # keep references: Tk does not

        def step():
            if not label.winfo_exists():
                return
            state['i'] = (state['i'] + 1) % len(frames)
            label.configure(image=frames[state['i']])
            win.after(delays[state['i']], step)
        win.after(delays[0], step)


class ExplorerView(_WindowView):
    """The interactive landscape explorer (``core.landscape.explore.Explorer``)
    in its own Tk window, with the matplotlib toolbar."""

    def __init__(self, explorer, title='landscape explorer', tkParent=None):
        _WindowView.__init__(self, title, tkParent)
        self.explorer = explorer

    def save(self, path):
        """Draw the explorer on an Agg figure and write it as PNG; returns ``path``."""
        from ..core.landscape.plots import new_figure, save_figure
        if self.explorer.figure is None:
            self.explorer.build(new_figure(14, 7.5))
        return save_figure(self.explorer.figure, path)

    def show(self):
        from matplotlib.figure import Figure
        fig = Figure(figsize=(14, 7.5), dpi=90)
        win, canvas = self._figureWindow(fig)
        self.explorer.build(fig)
        canvas.draw()
        canvas.get_tk_widget().focus_set()   # keys (Enter, w, Esc) reach the explorer
        win._explorer = self.explorer        # keep it alive with its window
