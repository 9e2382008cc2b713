<?php

use Illuminate\Http\Request;
use Illuminate\Support\Facades\DB;
use Illuminate\Support\Facades\Route;

/** A route, a template and a database query (SQLite). */
function greetings_table(): void
{
    // Created on first use; a read on every other request.
    if (!DB::select("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'greetings'")) {
        DB::statement('CREATE TABLE IF NOT EXISTS greetings (id INTEGER PRIMARY KEY, word TEXT NOT NULL)');
        DB::statement("INSERT OR IGNORE INTO greetings (id, word) VALUES (1, 'hello'), (2, 'bonjour'), (3, 'hallo')");
    }
}

Route::get('/hello/{name}', function (string $name, Request $request) {
    // Requests this process's application has served: kept in worker mode.
    static $served = 0;
    $served++;
    greetings_table();
    return view('hello', [
        'name' => $name,
        'words' => DB::table('greetings')->orderBy('id')->pluck('word'),
        'served' => $served,
        'pid' => getmypid(),
        'query' => $request->query(),
    ]);
});

Route::post('/greet', function (Request $request) {
    greetings_table();
    DB::table('greetings')->insert(['word' => (string) $request->input('word')]);
    return response((string) DB::table('greetings')->count(), 201);
});
