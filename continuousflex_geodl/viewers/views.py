"""Scipion ``View`` objects of our viewers: a figure or an animation in a Tk window.

``FigureView(fig)`` shows a matplotlib Figure (made with ``plotting``) in a
Tk window with the matplotlib toolbar (zoom, pan, save); ``save(path)``
writes it as PNG without any display.  ``AnimationView(gif)`` plays an
animated GIF in a Tk window.  Both only need a display when ``show()`` is
called.
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


class FigureView(View):
    """A matplotlib Figure shown in its own Tk window."""

    def __init__(self, figure, title='continuousflex_geodl', tkParent=None):
        View.__init__(self)
        self.figure = figure
        self.title = title
        self._tkParent = tkParent

    def save(self, path):
        """Write the figure as PNG (atomic; works headless); returns ``path``."""
        from ..core.landscape.plots import save_figure
        return save_figure(self.figure, path)

    def show(self):
        from matplotlib.backends.backend_tkagg import FigureCanvasTkAgg, NavigationToolbar2Tk
        win = _toplevel(self.title, self._tkParent)
        canvas = FigureCanvasTkAgg(self.figure, master=win)
        NavigationToolbar2Tk(canvas, win).update()
        canvas.draw()
        canvas.get_tk_widget().pack(side='top', fill='both', expand=True)


class AnimationView(View):
    """An animated GIF played in a Tk window (loops until closed)."""

    def __init__(self, gif, title='pathway animation', tkParent=None):
        View.__init__(self)
        self.gif = gif
        self.title = title
        self._tkParent = tkParent

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
