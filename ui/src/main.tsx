// Entry point: mounts the app on #app (index.html) with its stylesheet.

import { render } from 'preact'
import { App } from './app.tsx'
import './app.css'

const root = document.getElementById('app')
if (root === null) throw new Error('index.html has no #app element.')
root.textContent = ''
render(<App />, root)
